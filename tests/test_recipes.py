"""Every recipe runs on the embedded demo data with `--preset tiny --data demo`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ulvideo.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's ulvideo, whatever is installed
QUICK = ["--preset", "tiny", "--data", "demo", "--max_steps", "2", "--batch_size", "2",
         "--eval_every", "1000", "--num_workers", "0", "--log_every", "1"]  # fmt: skip


def run_recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / f"{name}.py"), *QUICK, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("dataset", ["kinetics600", "imagenet512"])
def test_recipe_pair_runs_on_demo_data(tmp_path, dataset):
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    run_recipe(f"{dataset}_stage1", "--output_dir", str(s1))
    run_recipe(
        f"{dataset}_stage2", "--output_dir", str(s2), "--stage1_checkpoint", str(s1 / "final")
    )
    for run in (s1, s2):
        records = [r for r in read_metrics(run) if "loss" in r]
        assert [r["step"] for r in records] == [1, 2]
        assert all(r["loss"] is not None and r["loss"] > 0 for r in records)
    config = json.loads((s1 / "final" / "ul" / "config.json").read_text())["config"]
    if dataset == "kinetics600":  # the recipe's 4x8x8 compression survives the demo overrides
        assert (config["temporal_downsample"], config["spatial_downsample"]) == (4, 8)
    else:  # ImageNet: 16x spatial, 32 latent channels, one-frame videos
        assert (config["spatial_downsample"], config["latent_channels"]) == (16, 32)
    base = json.loads((s2 / "final" / "base" / "config.json").read_text())["config"]
    assert base["num_classes"] == (10 if dataset == "imagenet512" else 0)


def test_recipe_reports_bad_flags_before_training(tmp_path):
    cmd = [sys.executable, str(ROOT / "recipes" / "kinetics600_stage1.py"), "--data", "kinetics600",
           "--data_root", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2 and proc.stderr == (
        f"kinetics600_stage1.py: error: data_root {str(tmp_path / 'missing')!r} does not exist "
        "(--debug shows the traceback)\n"
    )
    assert not (tmp_path / "run").exists()
    proc = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=ENV, timeout=300)
    assert (
        proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    )

"""Every recipe runs on the embedded demo data with `--preset tiny --data demo` (stage 1) or
`--base_preset tiny --data demo` (stage 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ulvideo.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's ulvideo, whatever is installed
QUICK = ["--data", "demo", "--max_steps", "2", "--batch_size", "2",
         "--eval_every", "1000", "--num_workers", "0", "--log_every", "1"]  # fmt: skip
# Recipes run as scripts: put this checkout first on the path, not an installed copy of ulvideo.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def run_recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    preset = ["--base_preset" if name.endswith("stage2") else "--preset", "tiny"]
    cmd = [sys.executable, str(ROOT / "recipes" / f"{name}.py"), *preset, *QUICK, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


CAUSAL_4X8X8 = {"temporal_downsample": 4, "spatial_downsample": 8}
# Each recipe pair: its stage-1 model settings that survive the demo overrides, the base model's
# classes on the demo's 10 digits (0: not class-conditional), and extra flags.
RECIPE_PAIRS = {
    "kinetics600": (CAUSAL_4X8X8, 0, []),
    "imagenet512": ({"spatial_downsample": 16, "latent_channels": 32}, 10, []),
    "ucf101": (CAUSAL_4X8X8, 10, ["--mixed_precision", "no"]),
    # the demo's clips and their first frames share the 10 digit classes
    "joint": (
        CAUSAL_4X8X8,
        10,
        ["--mixed_precision", "no", "--data_mix", "demo=0.7,demo_images=0.3"],
    ),
}


def check_pair(s1, s2, model_settings, num_classes):
    for run in (s1, s2):
        records = [r for r in read_metrics(run) if "loss" in r]
        assert [r["step"] for r in records] == [1, 2]
        assert all(r["loss"] is not None and r["loss"] > 0 for r in records)
    config = json.loads((s1 / "final" / "autoencoder" / "config.json").read_text())["config"]
    assert {name: config[name] for name in model_settings} == model_settings
    base = json.loads((s2 / "final" / "base" / "config.json").read_text())["config"]
    assert base["num_classes"] == num_classes


@pytest.mark.slow
@pytest.mark.parametrize("dataset", RECIPE_PAIRS)
def test_recipe_pair_runs_on_demo_data(tmp_path, dataset):
    model_settings, num_classes, flags = RECIPE_PAIRS[dataset]
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    run_recipe(f"{dataset}_stage1", "--output_dir", str(s1), *flags)
    run_recipe(
        f"{dataset}_stage2",
        *("--output_dir", str(s2), "--stage1_checkpoint", str(s1 / "final"), *flags),
    )
    check_pair(s1, s2, model_settings, num_classes)


@pytest.mark.slow
def test_videos_recipes_train_on_a_folder_of_videos(tmp_path):
    from test_data_video import coded_frames

    from ulvideo.data import write_video

    footage = tmp_path / "footage"
    footage.mkdir()
    for i in range(3):  # a flat folder: unlabelled
        write_video(footage / f"take{i}.mp4", coded_frames(20, clip_id=i))
    data = ["--data", "videos", "--data_root", str(footage), "--resolution", "32"]
    flags = [*data, "--mixed_precision", "no", "--target_fps", "12.5"]  # 25 fps: every 2nd frame
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    run_recipe("videos_stage1", "--output_dir", str(s1), "--frames", "9", *flags)
    run_recipe(
        "videos_stage2",
        *("--output_dir", str(s2), "--stage1_checkpoint", str(s1 / "final"), "--frames", "9"),
        *flags,
    )
    check_pair(s1, s2, CAUSAL_4X8X8, 0)
    saved = json.loads((footage / ".ulvideo" / "manifest-train.json").read_text())
    assert sorted(row[:3] for row in saved["entries"]) == [
        [f"take{i}.mp4", 20, 25.0] for i in range(3)
    ]


@pytest.mark.slow
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


@pytest.mark.parametrize("recipe", ["kinetics600", "imagenet512", "ucf101", "videos"])
def test_stage1_recipes_train_the_kl_arm(tmp_path, recipe):
    settings = RECIPE_PAIRS.get(recipe, (CAUSAL_4X8X8,))[0]
    kl = '{"regularizer": "kl", "kl_weight": 0.5}'
    run_recipe(f"{recipe}_stage1", "--output_dir", str(tmp_path), "--model", kl,
               "--mixed_precision", "no")  # fmt: skip
    config = json.loads((tmp_path / "final" / "autoencoder" / "config.json").read_text())["config"]
    assert config["regularizer"] == "kl" and config["kl_weight"] == 0.5
    assert {name: config[name] for name in settings} == settings  # the recipe's own stay
    assert all(r["bits_per_pixel"] > 0 for r in read_metrics(tmp_path) if "loss" in r)


STAGE2_RECIPES = ["kinetics600_stage2", "ucf101_stage2", "videos_stage2", "imagenet512_stage2"]


@pytest.mark.parametrize("name", STAGE2_RECIPES)
def test_stage2_recipes_refuse_preset_and_name_base_preset(tmp_path, name, monkeypatch):
    """`--preset` sizes stage 1's autoencoder; a stage-2 recipe given it (even `--preset tiny`,
    the library's default) stops before anything is built, naming `--base_preset`, rather than
    silently building its 1.36 B-parameter medium base model."""
    import importlib.util

    from ulvideo.train.config import TrainConfig, parse_config

    monkeypatch.syspath_prepend(str(ROOT / "recipes"))  # the recipes import video_defaults
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    (cls,) = [c for c in vars(recipe).values() if isinstance(c, type) and c.__module__ == name]
    assert issubclass(cls, TrainConfig) and cls.stage == 2
    stage1 = ["--stage1_checkpoint", str(tmp_path), "--data", "demo"]
    for preset in ("tiny", "medium"):
        with pytest.raises(
            ValueError, match=f"--preset {preset} names a stage-1 autoencoder.*--base_preset"
        ):
            parse_config(cls, ["--preset", preset, *stage1]).validate()
    parse_config(cls, ["--base_preset", "tiny", *stage1]).validate()  # the fix passes


def test_the_library_config_refuses_preset_in_stage2_and_says_what_demo_data_changed(
    tmp_path, capsys
):
    from ulvideo.train.config import DEMO_DEFAULTS, TrainConfig, parse_config

    stage2 = ["--stage", "2", "--stage1_checkpoint", str(tmp_path), "--base_preset", "tiny"]
    with pytest.raises(ValueError, match="--preset tiny names a stage-1 autoencoder"):
        parse_config(TrainConfig, [*stage2, "--preset", "tiny"])  # tiny is also the default
    capsys.readouterr()
    config = parse_config(TrainConfig, ["--data", "demo", "--lr", "3e-4"])
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith("--data demo sets ")
    # every default it changed is named with its value, and nothing the user gave
    for name, value in DEMO_DEFAULTS.items():
        if name == "lr":
            assert config.lr == 3e-4 and "--lr " not in line
        elif value != getattr(TrainConfig, name):
            assert f"--{name} {value} " in line + " " and getattr(config, name) == value
    parse_config(TrainConfig, ["--data", "videos", "--data_root", str(tmp_path)])
    assert capsys.readouterr().err == ""


def test_stage2_recipe_with_preset_is_one_line_before_building(tmp_path):
    cmd = [sys.executable, str(ROOT / "recipes" / "kinetics600_stage2.py"), "--preset", "tiny",
           "--data", "demo", "--stage1_checkpoint", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "use --base_preset" in proc.stderr

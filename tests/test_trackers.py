"""`--report_to`: TensorBoard event files hold metrics.jsonl's scalars at its steps, the config once
and the evaluation clips over their reconstructions; W&B offline when installed."""

import importlib.util
import io
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_train import tiny

from ulvideo.data import build_dataset
from ulvideo.train import train
from ulvideo.train.metrics import read_metrics
from ulvideo.train.trackers import clips_image, trackers_for


def test_tensorboard_holds_the_metrics_the_config_and_the_evaluation_clips(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny(tmp_path, max_steps=3, eval_every=2, report_to="tensorboard")
    train(config)
    logs = tmp_path / "run" / "ulvideo"
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    records = read_metrics(tmp_path / "run")
    expected = {}  # tag -> {step: value}, every number of metrics.jsonl
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                expected.setdefault(key, {})[record["step"]] = value
    assert {"loss", "bits_per_pixel", "eval_psnr", "eval_latent_gap_db"} <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, by_step in expected.items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged.keys() == by_step.keys(), tag
        for step, value in by_step.items():  # TensorBoard stores float32
            assert logged[step] == pytest.approx(value, rel=1e-6, abs=1e-30), (tag, step)
    assert sorted(expected["eval_psnr"]) == [2, 3]  # every eval_every, and the last step

    # the config, once, as the run had it
    [hparams] = list(logs.rglob("hparams.yml"))
    logged_config = yaml.safe_load(hparams.read_text())
    assert logged_config["lr"] == config.lr and logged_config["max_steps"] == 3
    assert json.loads(logged_config["betas"]) == list(config.betas)

    # at each evaluation: the evaluation clips (the demo's test split) above their reconstructions
    [tag] = events.Tags()["images"]
    assert tag == "eval/real_over_reconstruction"
    images = events.Images(tag)
    assert [image.step for image in images] == [2, 3]
    picture = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)))
    assert picture.shape == (2 * 4 * 16, 5 * 16, 3)  # 4 clips x (real, reconstruction), 5 frames
    test = build_dataset("demo", None, "test", frames=5, resolution=16)
    for clip in range(4):
        real = clips_image([torch.as_tensor(test[clip][0])])
        np.testing.assert_array_equal(picture[clip * 32 : clip * 32 + 16], real)
        assert not np.array_equal(picture[clip * 32 + 16 : clip * 32 + 32], real)


def test_clips_image_puts_frames_side_by_side_and_clips_below_each_other():
    a = torch.full((3, 2, 4, 4), -1.0)
    a[:, 1] = 1.0  # frame 1 white
    b = torch.zeros(3, 2, 4, 4)
    image = clips_image([a, b])
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert (image[:4, :4] == 0).all() and (image[:4, 4:] == 255).all()
    assert (image[4:] == 128).all()  # 0 in [-1, 1] -> round(127.5)


def test_report_to_is_explicit_and_checked_before_training(tmp_path):
    run = train(tiny(tmp_path, max_steps=1, checkpoint_every=100))  # default: none
    assert run.accelerator.trackers == [] and not (tmp_path / "run" / "ulvideo").exists()
    with pytest.raises(ValueError, match="report_to must be one of none, all, tensorboard, wandb"):
        tiny(tmp_path, report_to="mlflow").validate()
    assert trackers_for("all") == [
        name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name)
    ]
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValueError, match="wandb is not installed: pip install wandb"):
            tiny(tmp_path, report_to="wandb").validate()


@pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None,
    reason="wandb is not installed (pip install wandb): W&B is tested in offline mode when it is",
)
def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(tiny(tmp_path, max_steps=2, eval_every=2, report_to="wandb"))
    [run] = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    [log] = list(run.glob("*.wandb"))
    # wandb keeps an offline run in a record log with no public reader; its history records hold
    # each logged value as JSON text, so every number of metrics.jsonl is found there verbatim
    data = log.read_bytes()
    for record in read_metrics(tmp_path / "run"):
        for key, value in record.items():
            if isinstance(value, float):
                assert key.encode() in data and json.dumps(value).encode() in data, key
    [image] = list((run / "files" / "media" / "images" / "eval").glob("*.png"))
    assert image.name.startswith("real_over_reconstruction_2_")  # at the evaluation's step
    assert Image.open(image).size == (5 * 16, 2 * 4 * 16)

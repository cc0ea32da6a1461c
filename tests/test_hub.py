"""The Hugging Face Hub, without a network: exports load by repo id from huggingface_hub's own cache
layout in offline mode, are verified like local ones, and `ulvideo push` writes the export with a
model card that carries the run's own figures."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants
from test_train import tiny

from ulvideo.cli import main
from ulvideo.evaluate.fvd import fvd_report, get_protocol
from ulvideo.pipeline import Pipeline
from ulvideo.train import train
from ulvideo.train.checkpoint import complete_checkpoints
from ulvideo.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
COMMIT_MAIN, COMMIT_V1 = "a" * 40, "b" * 40


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str, ref: str = "main"):
    """`folder` as huggingface_hub caches a download of `repo_id` at `commit`: the files as blobs
    named by their sha256, linked from snapshots/<commit>/, and refs/<ref> holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = repo / "snapshots" / commit / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline. huggingface_hub reads both settings when it is imported, so the
    module's values are set beside the environment (which subprocesses read)."""
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A stage-1 run (2 steps, evaluated at step 2) and a stage-2 run on it (1 step)."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("runs")
    train(tiny(tmp, "s1", max_steps=2, eval_every=2, checkpoint_every=2))
    train(tiny(tmp, "s2", stage=2, stage1_checkpoint=str(tmp / "s1" / "final"), max_steps=1))
    return tmp


def weights(pipeline: Pipeline) -> dict:
    return {
        f"{i}.{k}": v
        for i, net in enumerate(pipeline.networks)
        for k, v in net.state_dict().items()
    }


def assert_same_weights(a: Pipeline, b: Pipeline) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_a_hub_id_loads_offline_from_the_cache_at_its_revision(
    runs, offline_cache, tmp_path, monkeypatch
):
    stage1, stage2 = runs / "s1" / "final", runs / "s2" / "final"
    snapshot = put_in_hub_cache(offline_cache, "org/tiny-ul", stage1, COMMIT_MAIN)
    put_in_hub_cache(offline_cache, "org/tiny-ul", stage2, COMMIT_V1, ref="v1")
    monkeypatch.chdir(tmp_path)

    loaded = Pipeline.from_pretrained("org/tiny-ul")
    assert loaded.base is None
    assert_same_weights(loaded, Pipeline.from_pretrained(stage1))
    for revision in ("v1", COMMIT_V1):  # a tag and a commit
        at_v1 = Pipeline.from_pretrained("org/tiny-ul", revision=revision)
        assert_same_weights(at_v1, Pipeline.from_pretrained(stage2))
    assert Pipeline.from_pretrained("org/tiny-ul", revision="main").base is None

    with pytest.raises(FileNotFoundError, match="org/other .revision main. is not in the Hugging"):
        Pipeline.from_pretrained("org/other")
    with pytest.raises(FileNotFoundError, match="org/tiny-ul .revision v2. is not in the Hugging"):
        Pipeline.from_pretrained("org/tiny-ul", revision="v2")
    with pytest.raises(FileNotFoundError, match="runs/x/final is not a ulvideo export"):
        Pipeline.from_pretrained("runs/x/final")  # two slashes: a local path, not an id

    # a local folder of the same name wins; a revision for it is an error, not ignored
    shutil.copytree(stage2, tmp_path / "org" / "tiny-ul")
    assert Pipeline.from_pretrained("org/tiny-ul").base is not None
    with pytest.raises(ValueError, match="is a local path: drop the revision"):
        Pipeline.from_pretrained("org/tiny-ul", revision="v1")
    assert snapshot.is_dir()


def test_a_corrupted_cached_file_is_refused_with_the_local_error(
    runs, offline_cache, tmp_path, capsys
):
    snapshot = put_in_hub_cache(offline_cache, "org/tiny-ul", runs / "s1" / "final", COMMIT_MAIN)
    local = shutil.copytree(runs / "s1" / "final", tmp_path / "local")
    for weights_file in (snapshot / "autoencoder" / "model.safetensors",
                         local / "autoencoder" / "model.safetensors"):  # fmt: skip
        data = bytearray(weights_file.read_bytes())  # through the link: the cached blob
        data[-1] ^= 0x01
        weights_file.resolve().write_bytes(bytes(data))
    errors = {}
    for name, checkpoint in (("hub", "org/tiny-ul"), ("local", str(local))):
        capsys.readouterr()
        assert main(["info", checkpoint]) == 2
        errors[name] = capsys.readouterr().err
        assert errors[name].count("\n") == 1 and "Traceback" not in errors[name]
    hub_path = snapshot / "autoencoder" / "model.safetensors"
    assert errors["hub"].startswith(
        f"ulvideo: error: {hub_path} is corrupt: its sha256 differs from the one written with it"
    )
    assert errors["hub"].replace(str(snapshot), "EXPORT") == errors["local"].replace(
        str(local), "EXPORT"
    )


def card_rows(card: str) -> dict[str, list[tuple[str, str]]]:
    """{figure: [(value, where measured)]} of the card's results table."""
    rows = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "figure":
            rows.setdefault(cells[0], []).append((cells[1], cells[2]))
    return rows


@pytest.mark.slow
def test_push_local_dir_writes_a_self_contained_export_whose_card_holds_the_run_figures(
    runs, offline_cache, tmp_path
):
    # an evaluation report of the stage-1 export, and an FVD report, both computed here
    recon = tmp_path / "recon.json"
    argv = ["eval", "reconstruction", "--checkpoint", str(runs / "s1" / "final")]
    argv += ["--dataset", "demo", "--frames", "5", "--num-videos", "2", "--batch-size", "2"]
    assert main([*argv, "--decode-steps", "2", "--out", str(recon)]) == 0
    generator = torch.Generator().manual_seed(0)
    real, fake = (torch.randn(8, 400, generator=generator, dtype=torch.float64) for _ in "ab")
    protocol = get_protocol("magvit-k600").settings()
    fvd = fvd_report(real, fake + 0.5, 1, protocol, num_samples=8)
    assert len(fvd["protocol_deviations"]) == 2  # 8 samples of 50000, 1 group of 4
    (tmp_path / "fvd.json").write_text(json.dumps(fvd))

    # a stage-2 checkpoint's export refers to stage 1; the pushed folder holds the autoencoder
    checkpoint = complete_checkpoints(runs / "s2")[-1]
    assert (checkpoint / "export" / "stage1.json").is_file()
    out = tmp_path / "push"
    argv = ["push", "--checkpoint", str(checkpoint), "--repo_id", "org/tiny-s2"]
    argv += ["--local_dir", str(out), "--evaluation", str(recon)]
    assert main([*argv, "--evaluation", str(tmp_path / "fvd.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "autoencoder", "base"]

    card = (out / "README.md").read_text()
    data = ModelCard.load(out / "README.md").data  # YAML front matter, as the hub reads it
    assert data.library_name == "ulvideo" and data.license == "unknown"
    rows = card_rows(card)
    # stage 1's own evaluation at its last step, from its metrics.jsonl
    evaluation = [r for r in read_metrics(runs / "s1") if "eval_psnr" in r][-1]
    where = "stage 1 run, evaluation at step 2 (metrics.jsonl: held-out clips)"
    assert (f"{evaluation['eval_psnr']:.2f}", where) in rows["reconstruction PSNR (dB)"]
    assert (f"{evaluation['eval_bits_per_pixel']:.4f}", where) in rows[
        "latent rate (prior, bits/pixel)"
    ]
    # the evaluation report's figures
    report = json.loads(recon.read_text())
    where = "recon.json (dataset demo, split test, num_videos 2, decode_steps 2)"
    assert (f"{report['psnr']:.2f}", where) in rows["reconstruction PSNR (dB)"]
    assert (f"{report['ssim']:.3f}", where) in rows["reconstruction SSIM"]
    # the FVD with its protocol and deviations
    [(value, where)] = rows["FVD"]
    assert value == f"{fvd['fvd']:.1f} ± {fvd['fvd_std']:.1f}"
    assert where == "fvd.json: protocol magvit-k600, deviations: " + "; ".join(
        fvd["protocol_deviations"]
    )
    # training data and steps of both stages
    for stage, steps in ((1, 2), (2, 1)):
        seen = [r for r in read_metrics(runs / f"s{stage}") if "examples_seen" in r][-1]
        assert seen["examples_seen"] == steps * 4
        assert (
            f"### Stage {stage}\n\n- data: `demo`, 5 frames at 16 px\n- steps: {steps} (of "
            f"max_steps {steps}), batch 4 per process x 1 processes x grad_accum 1, "
            f"{seen['examples_seen']} examples seen"
        ) in card
    assert 'Pipeline.from_pretrained("org/tiny-s2")' in card
    assert "ulvideo sample --checkpoint org/tiny-s2" in card

    # the folder, as the hub serves it, loads by its id offline: the checkpoint's own weights
    put_in_hub_cache(offline_cache, "org/tiny-s2", out, COMMIT_MAIN)
    assert_same_weights(
        Pipeline.from_pretrained("org/tiny-s2"), Pipeline.from_pretrained(checkpoint)
    )


def test_a_card_says_what_is_missing(runs, tmp_path):
    copied = shutil.copytree(runs / "s1" / "final", tmp_path / "copied")  # outside its run
    out = tmp_path / "push"
    assert main(["push", "--checkpoint", str(copied), "--repo_id", "org/x", "--local_dir", str(out),
                 "--license", "apache-2.0"]) == 0  # fmt: skip
    card = (out / "README.md").read_text()
    assert ModelCard.load(out / "README.md").data.license == "apache-2.0"
    assert card_rows(card) == {}
    assert "No figures: no training run or evaluation report was given" in card
    assert "FVD: not measured" in card
    assert "Training data and steps: not recorded (the export was pushed without its run)" in card
    assert "ulvideo reconstruct --checkpoint org/x" in card
    with pytest.raises(FileExistsError, match="is not empty"):
        main(["--debug", "push", "--checkpoint", str(copied), "--repo_id", "org/x",
              "--local_dir", str(out)])  # fmt: skip
    with pytest.raises(ValueError, match="not a hub model id"):
        Pipeline.from_pretrained(copied).push_to_hub("not/a/repo", local_dir=tmp_path / "other")


def test_the_demo_layout_adds_its_metrics_json(runs, tmp_path):
    demo = tmp_path / "demo_out"
    shutil.copytree(runs / "s1", demo / "stage1")
    metrics = {
        "bits_per_pixel": 0.0123,
        "psnr": 20.5,
        "fvd": {"rfvd": 88.25, "class_conditional": 301.5, "note": "FVD protocol tfgan; 16 videos"},
    }
    (demo / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "push"
    argv = ["push", "--checkpoint", str(demo / "stage1" / "final"), "--repo_id", "org/demo"]
    assert main([*argv, "--local_dir", str(out)]) == 0
    rows = card_rows((out / "README.md").read_text())
    assert ("0.0123", "metrics.json") in rows["latent rate (prior, bits/pixel)"]
    assert rows["FVD, rfvd"] == [("88.2", "metrics.json: FVD protocol tfgan; 16 videos")]
    assert rows["FVD, class conditional"] == [
        ("301.5", "metrics.json: FVD protocol tfgan; 16 videos")
    ]


def test_push_to_hub_uploads_the_folder_it_writes(runs, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def upload_folder(self, repo_id, folder_path, commit_message):
        files = {p.relative_to(folder_path).as_posix(): p.read_bytes()
                 for p in Path(folder_path).rglob("*") if p.is_file()}  # fmt: skip
        calls.append(("upload", repo_id, files))
        return "https://huggingface.co/org/tiny/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, private, exist_ok: calls.append(
        ("create", repo_id, private)))  # fmt: skip
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    pipeline = Pipeline.from_pretrained(runs / "s1" / "final")
    url = pipeline.push_to_hub("org/tiny", private=True, training_run=runs / "s1" / "final")
    assert url.endswith("/commit/1") and calls[0] == ("create", "org/tiny", True)
    local = pipeline.push_to_hub("org/tiny", tmp_path / "local", training_run=runs / "s1" / "final")
    expected = {p.relative_to(local).as_posix(): p.read_bytes()
                for p in Path(local).rglob("*") if p.is_file()}  # fmt: skip
    assert calls[1][:2] == ("upload", "org/tiny") and calls[1][2] == expected


def test_the_cli_reads_hub_settings_from_the_environment(runs, tmp_path):
    cache = tmp_path / "cache"
    put_in_hub_cache(cache, "org/tiny-ul", runs / "s2" / "final", COMMIT_MAIN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "ulvideo", "info", "org/tiny-ul", "--frames", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    expected = Pipeline.from_pretrained(runs / "s2" / "final")
    assert info["base_config"] == expected.base_config.to_dict()
    assert info["config"] == expected.autoencoder.config.to_dict()

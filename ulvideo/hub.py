"""The Hugging Face Hub: exports by repo id, and publishing one with a generated model card.

Loading: `Pipeline.from_pretrained("org/name", revision=...)` and `--checkpoint org/name` resolve
through huggingface_hub's `snapshot_download` (its cache, HF_HUB_CACHE; revisions; offline mode,
HF_HUB_OFFLINE=1), and the files are then verified as a local export's are. A local path wins over
a repo id of the same name.

Publishing (`ulvideo push`, `Pipeline.push_to_hub`): the export, self-contained (a stage-2
checkpoint's reference to stage 1 is replaced by the autoencoder itself), and a README.md model
card. The card reports only what the export, its training run (metrics.jsonl and the checkpoints'
meta.json) and the evaluation reports given hold; a figure that is not there is said to be missing.
"""

import json
import os
import tempfile
from pathlib import Path

AUTOENCODER_FILES = ["autoencoder/*", "base/*", "stage1.json"]  # what loading downloads
CARD_NAME = "README.md"
PAPER = "Heek, Hoogeboom, Mensink and Salimans, *Unified Latents*, Google DeepMind, 2026"
MISSING = "not recorded"


def is_repo_id(text: str) -> bool:
    """`org/name` as the hub spells a model repo (one slash, no local-path syntax)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.count("/") != 1 or text.startswith((".", "~")):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None) -> Path:
    """A local path as it is; otherwise the snapshot of the hub repo `checkpoint` at `revision`
    (default main) in huggingface_hub's cache, downloaded unless it is there or offline."""
    path = Path(checkpoint)
    if path.exists() or not is_repo_id(str(checkpoint)):
        if revision is not None:
            raise ValueError(
                f"revision {revision!r} selects a version of a hub repo, but {checkpoint} is a "
                "local path: drop the revision, or give a hub repo id org/name (a local folder of "
                "that name wins)"
            )
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{checkpoint} (revision {revision or 'main'})"
    try:
        folder = snapshot_download(
            str(checkpoint), revision=revision, allow_patterns=AUTOENCODER_FILES
        )
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"{checkpoint} is not a local folder, and the hub repo {where} is not in the Hugging "
            f"Face cache ({constants.HF_HUB_CACHE}) and could not be downloaded (offline: "
            "HF_HUB_OFFLINE=1, or no connection): download it once online, or give a local export"
        ) from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(
            f"the hub repo {checkpoint} has no revision {revision!r}: give a branch, tag or commit"
        ) from err
    except RepositoryNotFoundError as err:  # also a gated or private repo without access
        raise FileNotFoundError(
            f"{checkpoint} is neither a local folder nor a hub model repo you can read: check the "
            "path or the id, or log in (`hf auth login`) for a private or gated repo"
        ) from err
    return Path(folder)


# ---------------------------------------------------------------------------------------------
# what a training run left on disk about itself


def training_run(checkpoint: str | os.PathLike) -> dict | None:
    """The run an export was written by, read from its directory: {"config" (TrainConfig dict),
    "step", "metrics" (metrics.jsonl records up to that step)}; None when `checkpoint` is not
    inside a run (an export copied elsewhere, a hub id)."""
    from .train.checkpoint import META, complete_checkpoints, read_meta

    path = Path(checkpoint)
    if not path.is_dir():
        return None
    if path.name == "export":
        path = path.parent
    if (path / META).is_file():  # run/checkpoint-N
        run, meta = path.parent, read_meta(path)
    elif (path.parent / "metrics.jsonl").is_file():  # run/final: the newest checkpoint's meta
        run = path.parent
        found = complete_checkpoints(run)
        meta = read_meta(found[-1]) if found else None
    else:
        return None
    from .train.metrics import read_metrics

    records = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    step = meta["step"] if meta else max((r["step"] for r in records), default=None)
    return {
        "config": meta["config"] if meta else None,
        "step": step,
        "metrics": [r for r in records if step is None or r["step"] <= step],
    }


def stage_runs(checkpoint) -> list[tuple[int, dict]]:
    """(stage, run) of the export's run and, for stage 2, of the stage-1 run it trained on."""
    run = training_run(checkpoint)
    if run is None or run["config"] is None:
        return [] if run is None else [(0, run)]
    runs = [(run["config"]["stage"], run)]
    stage1 = run["config"].get("stage1_checkpoint")
    if run["config"]["stage"] == 2 and stage1 and Path(stage1).exists():
        runs = [(1, found) for found in [training_run(stage1)] if found] + runs
    return runs


def read_reports(paths) -> list[tuple[str, dict]]:
    """(file name, JSON report) of evaluation reports: `ulvideo eval ... --out`, the demo's
    metrics.json."""
    reports = []
    for path in paths:
        try:
            reports.append((Path(path).name, json.loads(Path(path).read_text())))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"evaluation report {path} does not exist") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"evaluation report {path} is not JSON ({err})") from err
    return reports


def demo_report(checkpoint) -> list[Path]:
    """The demo's metrics.json for an export of its runs (`<demo out>/stage{1,2}/final`)."""
    path = Path(checkpoint)
    if path.name == "export":
        path = path.parent
    report = path.parent.parent / "metrics.json"
    return [report] if path.parent.name in ("stage1", "stage2") and report.is_file() else []


# ---------------------------------------------------------------------------------------------
# the model card

# the figures a card reports: key in an evaluation report -> (what it is, format)
FIGURES = {
    "bits_per_pixel": ("latent rate (prior, bits/pixel)", "{:.4f}"),
    "psnr": ("reconstruction PSNR (dB)", "{:.2f}"),
    "ssim": ("reconstruction SSIM", "{:.3f}"),
    "psnr_swapped_latent": ("PSNR decoding another clip's latent (dB)", "{:.2f}"),
    "latent_gap_db": ("gap to another clip's latent (dB)", "{:.2f}"),
    "base_nats": ("base model loss (nats per latent clip)", "{:.1f}"),
}
# the same figures as a stage's evaluation logs them in metrics.jsonl (a fixed held-out batch)
RUN_KEYS = {
    "eval_bits_per_pixel": "bits_per_pixel",
    "eval_psnr": "psnr",
    "eval_psnr_swapped": "psnr_swapped_latent",
    "eval_latent_gap_db": "latent_gap_db",
    "eval_base_nats": "base_nats",
}


def _value(fmt: str, value) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else f"{value} (not a number)"


def _run_rows(stage: int, run: dict) -> list[str]:
    evaluations = [r for r in run["metrics"] if any(k in r for k in RUN_KEYS)]
    if not evaluations:
        return []
    last = evaluations[-1]
    source = f"stage {stage} run, evaluation at step {last['step']} (metrics.jsonl: held-out clips)"
    return [
        f"| {FIGURES[key][0]} | {_value(FIGURES[key][1], last[logged])} | {source} |"
        for logged, key in RUN_KEYS.items()
        if logged in last
    ]


def _fvd_rows(source: str, report: dict) -> list[str]:
    """FVD entries: `ulvideo eval k600` style ({fvd, fvd_std, protocol, protocol_deviations}),
    `eval reconstruction --rfvd` ({rfvd, rfvd_protocol}) or the demo's ({set: fvd, note})."""
    rows = []
    if "fvd" in report and "protocol" in report:  # ulvideo.evaluate.fvd.fvd_report
        deviations = report.get("protocol_deviations")
        if deviations is None:
            deviations = f"deviations {MISSING}"
        else:
            deviations = "deviations: " + "; ".join(deviations) if deviations else "no deviations"
        rows.append(
            f"| FVD | {_value('{:.1f}', report['fvd'])} ± {_value('{:.1f}', report.get('fvd_std'))}"
            f" | {source}: protocol {report['protocol'].get('name')}, {deviations} |"
        )
    if "rfvd" in report:
        protocol = report.get("rfvd_protocol", {}).get("name", MISSING)
        rows.append(
            f"| reconstruction FVD (rFVD) | {_value('{:.1f}', report['rfvd'])} | {source}: "
            f"protocol {protocol}, {report.get('num_videos', '?')} videos; deviations {MISSING} |"
        )
    demo = report.get("fvd")
    if isinstance(demo, dict):
        if "skipped" in demo:
            rows.append(f"| FVD | not measured | {source}: skipped ({demo['skipped']}) |")
        note = demo.get("note", f"protocol {MISSING}")
        rows += [
            f"| FVD, {name.replace('_', ' ')} | {_value('{:.1f}', value)} | {source}: {note} |"
            for name, value in demo.items()
            if name not in ("note", "skipped")
        ]
    return rows


def _report_rows(source: str, report: dict) -> list[str]:
    described = ", ".join(
        f"{k} {report[k]}"
        for k in ("dataset", "split", "num_videos", "decode_steps")
        if k in report
    )
    where = f"{source}" + (f" ({described})" if described else "")
    rows = [
        f"| {name} | {_value(fmt, report[key])} | {where} |"
        for key, (name, fmt) in FIGURES.items()
        if key in report
    ]
    accuracy = report.get("class_accuracy")
    if isinstance(accuracy, dict):
        rows += [
            f"| class accuracy, {k.replace('_', ' ')} | {_value('{:.0%}', v)} | {where} |"
            for k, v in accuracy.items()
        ]
    return rows + _fvd_rows(source, report)


def _training_section(stage: int, run: dict) -> list[str]:
    config = run["config"]
    last = next((r for r in reversed(run["metrics"]) if "examples_seen" in r), {})
    title = f"### Stage {stage}" if stage else "### Training run"
    if config is None:
        return [title, "", f"Training configuration: {MISSING} (no checkpoint meta.json).", ""]
    data = f"`{config['data']}`" + (
        " from pre-computed latents" if config.get("latents_dir") else ""
    )
    lines = [
        title,
        "",
        f"- data: {data}, {config['frames']} frames at {config['resolution']} px",
        f"- steps: {run['step']} (of max_steps {config['max_steps']}), batch {config['batch_size']}"
        f" per process x {last.get('world_size', '?')} processes x grad_accum "
        f"{config['grad_accum']}, {last.get('examples_seen', MISSING)} examples seen",
        f"- optimiser: AdamW, lr {config['lr']}, warm-up {config['lr_warmup_steps']} steps, EMA "
        f"{config['ema_decay']}, precision {config['mixed_precision']}",
    ]
    name = config.get("base_preset") if stage == 2 else config.get("preset")
    lines.append(f"- preset: `{name}`, overrides `{json.dumps(config.get('model', {}))}`")
    lines += ["", "<details><summary>full training config</summary>", "", "```json"]
    lines += [json.dumps(config, indent=2), "```", "", "</details>", ""]
    return lines


def model_card(
    folder: str | os.PathLike,
    repo_id: str,
    runs: list[tuple[int, dict]] = (),
    reports: list[tuple[str, dict]] = (),
    license: str | None = None,
) -> str:
    """The README.md of an export `folder` (autoencoder/, base/): YAML front matter, the method,
    the configs, the training runs, the figures and how to load and sample."""
    from huggingface_hub import ModelCardData

    from .pipeline import AUTOENCODER, BASE
    from .serialization import CONFIG_NAME

    folder = Path(folder)
    parts = {
        part: json.loads((folder / part / CONFIG_NAME).read_text())
        for part in (AUTOENCODER, BASE)
        if (folder / part / CONFIG_NAME).is_file()
    }
    data = ModelCardData(
        license=license or "unknown",
        library_name="ulvideo",
        tags=["video", "video-generation", "diffusion", "unified-latents", "autoencoder"],
    )
    base = parts.get(BASE)
    what = "a video autoencoder (stage 1)"
    if base:
        kind = "class-conditional" if base["config"].get("num_classes") else "unconditional"
        what = f"a video autoencoder and a latent diffusion base model ({kind}, stage 2)"
    ae = parts[AUTOENCODER]["config"]
    rows = [row for stage, run in runs for row in _run_rows(stage, run)]
    rows += [row for source, report in reports for row in _report_rows(source, report)]
    lines = [
        "---",
        data.to_yaml().strip(),
        "---",
        "",
        f"# {repo_id}",
        "",
        f"A ulvideo export of {what}, trained with **Unified "
        f"Latents** (UL; {PAPER}): a deterministic encoder whose latents get fixed Gaussian noise "
        f"(log-SNR {ae.get('logsnr_latent', MISSING)}), a diffusion prior on the latents whose KL "
        "bounds the bitrate, and a diffusion decoder trained with a sigmoid-weighted ELBO"
        + (". Stage 2 trains the base model on the frozen latents." if base else ".")
        + " Weights are safetensors; each part's config.json records their size and sha256, "
        "verified on loading.",
        "",
        "## Results",
        "",
    ]
    if rows:
        lines += ["| figure | value | measured on |", "|---|---|---|", *rows, ""]
    else:
        lines += [
            "No figures: no training run or evaluation report was given with this export "
            "(`ulvideo push --evaluation REPORT.json`).",
            "",
        ]
    if not any("FVD" in row for row in rows):
        lines += [
            "FVD: not measured (`ulvideo eval k600 --out k600_fvd.json`, then `ulvideo push "
            "--evaluation k600_fvd.json`).",
            "",
        ]
    lines += ["## Training", ""]
    if runs:
        for stage, run in runs:
            lines += _training_section(stage, run)
    else:
        lines += [
            f"Training data and steps: {MISSING} (the export was pushed without its run).",
            "",
        ]
    lines += ["## Configs", ""]
    for part, meta in parts.items():
        lines += [f"`{part}/config.json` (ulvideo {meta.get('ulvideo_version', '?')}):", ""]
        lines += ["```json", json.dumps(meta["config"], indent=2), "```", ""]
    lines += _usage(repo_id, base is not None, ae.get("resolution"))
    lines += [
        "## Licence",
        "",
        f"`{data.license}`"
        + (" (set `license:` in the front matter above)." if not license else "."),
        "",
        "## Citation",
        "",
        f"{PAPER}.",
        "",
    ]
    return "\n".join(lines)


def _usage(repo_id: str, has_base: bool, resolution) -> list[str]:
    python = ["```python", "from ulvideo.pipeline import Pipeline"]
    python += ["from ulvideo.sample import SamplingConfig"] if has_base else []
    python += [
        "",
        f'pipe = Pipeline.from_pretrained("{repo_id}")  # huggingface_hub cache; HF_HUB_OFFLINE=1 works',
    ]
    if has_base:
        python += [
            f"videos = pipe.generate(4, 17, {resolution}, SamplingConfig(base_steps=64, decoder_steps=64))",
        ]
    else:
        python += [
            f"recon = pipe.reconstruct(video)  # video: B x 3 x 17 x {resolution} x {resolution} in [-1, 1]"
        ]
    command = (
        f"ulvideo sample --checkpoint {repo_id} --num 8 --out samples"
        if has_base
        else f"ulvideo reconstruct --checkpoint {repo_id} --input clip.mp4"
    )
    return ["## Use", "", *python, "```", "", "```bash", command, "```", ""]


# ---------------------------------------------------------------------------------------------
# publishing


def write_hub_folder(
    pipeline,
    folder: str | os.PathLike,
    repo_id: str,
    training_run: str | os.PathLike | None = None,
    evaluations=(),
    license: str | None = None,
) -> Path:
    """The folder `push_to_hub` uploads: the pipeline's self-contained export and its README.md
    (figures from the run of the checkpoint `training_run` and the `evaluations` reports)."""
    if not is_repo_id(repo_id):
        raise ValueError(f"repo_id {repo_id!r} is not a hub model id: give org/name")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: give a new or empty folder")
    reports = read_reports(evaluations)  # before anything is written
    if training_run is not None:
        reports += read_reports(demo_report(training_run))
    runs = stage_runs(training_run) if training_run is not None else []
    pipeline.save_pretrained(folder)
    card = model_card(folder, repo_id, runs, reports, license)
    (folder / CARD_NAME).write_text(card)
    return folder


def push_to_hub(
    pipeline,
    repo_id: str,
    local_dir: str | os.PathLike | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload ulvideo export",
    **card,
) -> str:
    """Write the export and its card (`write_hub_folder`) and upload them to `repo_id`, or only
    write them to `local_dir`. Returns the folder written, or the commit's URL."""
    if local_dir is not None:
        return str(write_hub_folder(pipeline, local_dir, repo_id, **card))
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_hub_folder(pipeline, Path(tmp) / "export", repo_id, **card)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message
        )
    return str(commit)

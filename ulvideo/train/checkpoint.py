"""Atomic, resumable training checkpoints on top of accelerate's save_state / load_state.

A checkpoint is written to `<run>/.tmp-checkpoint-<step>` and renamed to `<run>/checkpoint-<step>`
only once complete (with `meta.json` last), so a crash mid-write never leaves a directory that
looks complete.
"""

import json
import os
import re
import shutil
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
META = "meta.json"


def complete_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := CHECKPOINT_RE.match(p.name)) and (p / META).is_file()
    ]
    return [p for _, p in sorted(found)]


def resolve_resume(run_dir, resume: str | None) -> Path | None:
    """`auto` -> the latest complete checkpoint (or None); a path -> that checkpoint, checked."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / META).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {META} inside)")
    return path


def read_meta(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / META).read_text())


def save_checkpoint(accelerator, run_dir, step: int, meta: dict, write_extra=None) -> Path:
    """Save accelerate state (+ `write_extra(tmp_dir)` on the main process), then publish atomically."""
    run_dir = Path(run_dir)
    final = run_dir / f"checkpoint-{step:08d}"
    tmp = run_dir / f".tmp-checkpoint-{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp)
        _write_json_durable(tmp / META, {**meta, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(run_dir, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints."""
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def _write_json_durable(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

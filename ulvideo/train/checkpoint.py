"""Atomic, self-verifying, resumable training checkpoints on top of accelerate's save_state.

A checkpoint is written to `<run>/.tmp-checkpoint-<step>` and renamed to `<run>/checkpoint-<step>`
only once complete, with `meta.json` last: a crash mid-write never leaves a directory that looks
complete. `meta.json` records the size and sha256 of every other file of the checkpoint, so one
truncated or damaged afterwards fails `verify_checkpoint`; `--resume auto` then moves it aside to
`<run>/corrupt-checkpoint-<step>` (never deleted) and resumes from the newest one that verifies.
"""

import json
import os
import re
import shutil
from pathlib import Path

from ..integrity import CorruptFileError, file_records, verify_files

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


def resolve_resume(run_dir, resume: str | None, warn=print) -> Path | None:
    """`auto` -> the newest complete checkpoint that verifies (or None): each newer one that fails
    is moved aside, with a one-line `warn`ing. A path -> that checkpoint, which must verify."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(run_dir)
        while found:
            checkpoint = found.pop()
            try:
                verify_checkpoint(checkpoint)
                return checkpoint
            except CorruptFileError as err:
                aside = move_aside(checkpoint)
                then = f"resuming from {found[-1].name}" if found else "starting from step 0"
                warn(
                    f"warning: {err.path}: {err.reason}; moved {checkpoint.name} to {aside.name}, {then}"
                )
        return None
    path = Path(resume)
    if not (path / META).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {META} inside)")
    verify_checkpoint(path)
    return path


def read_meta(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / META).read_text())


def verify_checkpoint(checkpoint) -> None:
    """CorruptFileError naming the first file of the checkpoint that is missing or does not have
    the size and sha256 recorded in its meta.json (or meta.json itself, if unreadable)."""
    checkpoint = Path(checkpoint)
    fix = "resume from an earlier checkpoint (--resume auto moves this one aside and does that)"
    try:
        meta = read_meta(checkpoint)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptFileError(checkpoint / META, f"not JSON ({err})", fix) from err
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or "step" not in meta:
        raise CorruptFileError(checkpoint / META, "it records no step or file checksums", fix)
    verify_files(checkpoint, meta["files"], fix)


def move_aside(checkpoint: Path) -> Path:
    """Rename a checkpoint that failed verification so that it is kept but never resumed from."""
    aside = checkpoint.with_name(f"corrupt-{checkpoint.name}")
    n = 1
    while aside.exists():  # the same step failed before
        aside, n = checkpoint.with_name(f"corrupt-{checkpoint.name}-{n}"), n + 1
    checkpoint.rename(aside)
    return aside


def save_checkpoint(accelerator, run_dir, step: int, meta: dict, write_extra=None) -> Path:
    """Save accelerate state (+ `write_extra(tmp_dir)` on the main process), record every file's
    size and sha256 in meta.json, then publish atomically."""
    run_dir = Path(run_dir)
    final = run_dir / f"checkpoint-{step:08d}"
    tmp = run_dir / f".tmp-checkpoint-{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files are written before they are listed
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp)
        _write_json_durable(tmp / META, {**meta, "step": step, "files": file_records(tmp)})
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

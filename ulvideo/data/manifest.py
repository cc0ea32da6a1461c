"""The index of a video dataset (path, frame count, fps, label per video), built once and cached as JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .video_io import VideoReadError, video_info

MANIFEST_VERSION = 2  # 2: frame height and width


@dataclass(frozen=True)
class VideoEntry:
    """One readable video; ``path`` is relative to the dataset root."""

    path: str
    num_frames: int
    fps: float
    label: int
    height: int = 0  # of the decoded frames; 0: unknown
    width: int = 0


@dataclass
class Manifest:
    """The readable videos and, for each unreadable one, why (``{relative path: reason}``)."""

    entries: list[VideoEntry]
    bad: dict[str, str]


def default_manifest_paths(root: str | os.PathLike, split: str) -> list[Path]:
    """Where a manifest is cached: under the root, else (root read-only) in the user cache dir."""
    root = Path(root).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ulvideo" / "manifests"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return [root / ".ulvideo" / f"manifest-{split}.json", cache / f"{digest}-{split}.json"]


def load_or_build_manifest(
    root: str | os.PathLike,
    candidates: list[tuple[str, int]],
    cache_paths: list[Path],
    backend: str | None = None,
) -> Manifest:
    """The manifest of ``candidates`` (relative path, label), read from the first cache path holding
    it for these candidates and backend, else built by probing every file and written to the first
    writable cache path. Under several processes, build it on one first (Accelerate's
    ``main_process_first``)."""
    fingerprint = _fingerprint(candidates, backend)
    for path in cache_paths:
        manifest = _read(path, fingerprint)
        if manifest is not None:
            return manifest
    manifest = _build(Path(root), candidates, backend)
    for path in cache_paths:
        if _write(path, manifest, fingerprint):
            break
    return manifest


def _fingerprint(candidates: list[tuple[str, int]], backend: str | None) -> str:
    content = json.dumps([MANIFEST_VERSION, backend, candidates]).encode()
    return hashlib.sha1(content).hexdigest()


def _probe(root: Path, relative: str, backend: str | None) -> tuple[int, float, int, int] | str:
    try:
        return video_info(root / relative, backend=backend)
    except VideoReadError as error:
        return str(error)


def _build(root: Path, candidates: list[tuple[str, int]], backend: str | None) -> Manifest:
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda c: _probe(root, c[0], backend), candidates)
        results = list(tqdm(results, total=len(candidates), desc="indexing videos", disable=None))
    entries, bad = [], {}
    for (relative, label), result in zip(candidates, results):
        if isinstance(result, str):
            bad[relative] = result
        else:
            num_frames, fps, height, width = result
            entries.append(VideoEntry(relative, num_frames, fps, label, height, width))
    return Manifest(entries, bad)


def _read(path: Path, fingerprint: str) -> Manifest | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    return Manifest([VideoEntry(*row) for row in data["entries"]], data["bad"])


def _write(path: Path, manifest: Manifest, fingerprint: str) -> bool:
    data = {
        "version": MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "columns": ["path", "num_frames", "fps", "label", "height", "width"],
        "entries": [
            [e.path, e.num_frames, e.fps, e.label, e.height, e.width] for e in manifest.entries
        ],
        "bad": manifest.bad,
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)  # atomic: concurrent writers never leave a torn file
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return False
    return True

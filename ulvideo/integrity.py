"""File checksums: every checkpoint and export records the size and sha256 of each file it holds
in the metadata it writes last (`meta.json` of a training checkpoint, `config.json` of an export
part), and loading verifies them, so a truncated, partly copied or bit-rotten file is named before
it is deserialised.
"""

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads


class CorruptFileError(ValueError):
    """A file of a checkpoint or export is missing, or its size or checksum is not the recorded one."""

    def __init__(self, path, reason: str, fix: str):
        super().__init__(f"{path} is corrupt: {reason}; {fix}")
        self.path, self.reason = Path(path), reason


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory, names=None) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of `names`, or of every file under `directory`."""
    directory = Path(directory)
    if names is None:
        names = sorted(
            p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
        )
    return {
        name: {"size": os.path.getsize(directory / name), "sha256": sha256_file(directory / name)}
        for name in names
    }


def verify_files(directory, records: dict, fix: str) -> None:
    """Raise CorruptFileError (naming the file, the reason and `fix`) unless every recorded file is
    present with its recorded size and sha256. Sizes are all checked before any file is read."""
    directory = Path(directory)
    for name, record in records.items():
        path = directory / name
        if not path.is_file():
            raise CorruptFileError(path, "the file is missing", fix)
        size = path.stat().st_size
        if size != record["size"]:
            raise CorruptFileError(
                path, f"{size} bytes where {record['size']} were written (truncated?)", fix
            )
    for name, record in records.items():
        if sha256_file(directory / name) != record["sha256"]:
            raise CorruptFileError(
                directory / name, "its sha256 differs from the one written with it", fix
            )

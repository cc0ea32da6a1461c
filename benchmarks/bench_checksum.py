"""What checksumming costs: saving and loading a preset's stage-1 export with and without its sha256,
and the throughput of sha256 against faster hashes on the same file.

    OMP_NUM_THREADS=1 python benchmarks/bench_checksum.py --preset medium \
        --out benchmarks/results/cpu_checksum.json

The weights are the preset's real UnifiedLatents, built on the CPU (random initialisation: the
cost does not depend on the values). A training checkpoint holds the weights about five times over
(network, EMA, the EMA export, AdamW's two moments), so its checksum time is estimated as five
times the export's bytes at the measured sha256 throughput.
"""

import argparse
import hashlib
import os
import tempfile
import time
import zlib
from pathlib import Path

import torch
from common import emit, machine

from ulvideo.integrity import CHUNK, sha256_file
from ulvideo.models import AutoencoderConfig, autoencoder_preset
from ulvideo.serialization import WEIGHTS_NAME, load_module, save_module
from ulvideo.ul import UnifiedLatents


def seconds(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def read_with(path: Path, update) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            update(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = UnifiedLatents(autoencoder_preset(args.preset))
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "autoencoder"
        save_s = seconds(lambda: save_module(model, model.config, export, "autoencoder"))
        weights = export / WEIGHTS_NAME
        size = weights.stat().st_size
        sha256_s = seconds(lambda: sha256_file(weights))  # the file is in the page cache now
        crc = [0]
        others = {
            "blake2b": seconds(lambda: read_with(weights, hashlib.blake2b().update)),
            "md5": seconds(lambda: read_with(weights, hashlib.md5().update)),
            "crc32": seconds(
                lambda: read_with(weights, lambda b: crc.__setitem__(0, zlib.crc32(b, crc[0])))
            ),
            "read_only": seconds(lambda: read_with(weights, len)),
        }
        load_s = seconds(
            lambda: load_module(export, UnifiedLatents, "autoencoder", AutoencoderConfig)
        )
    mb = size / 2**20
    result = {
        "machine": machine("cpu"),
        "preset": args.preset,
        "export_bytes": size,
        "params": sum(p.numel() for p in model.parameters()),
        "save_pretrained_s": round(save_s, 2),
        "load_module_s": round(load_s, 2),
        "sha256_s": round(sha256_s, 2),
        "sha256_share_of_save": round(sha256_s / save_s, 3),
        "sha256_share_of_load": round(sha256_s / load_s, 3),
        "throughput_mb_s": {
            "sha256": round(mb / sha256_s),
            **{name: round(mb / s) for name, s in others.items()},
        },
        "checkpoint_estimate": {
            "bytes": 5 * size,
            "sha256_s": round(5 * sha256_s, 2),
            "note": "network + EMA + EMA export + AdamW's two moments = 5x the export's bytes",
        },
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

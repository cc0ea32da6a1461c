"""Stage-2 latent pre-computation: encode a dataset once into safetensors shards, then train on them.

Each shard holds `z_clean` (N x C_z x T_z x H_z x W_z, float32) and `labels`; `manifest.json`
records the encoder's fingerprint, so shards made by another encoder are refused. A mixture in
shape buckets (ulvideo.data.mixture) is written as one such folder per bucket and source,
`<bucket>/source<k>/`, listed with the bucket table and the sources' weights in `buckets.json`.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

MANIFEST = "manifest.json"
BUCKETS = "buckets.json"


def encoder_fingerprint(ul) -> str:
    """sha256 over the encoder's config and weights: equal iff the latents would be equal."""
    h = hashlib.sha256(json.dumps(ul.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(ul.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def precompute_latents(
    ul, dataset: Dataset, out_dir, shard_size: int = 4096, batch_size: int = 32
) -> Path:
    """Encode every clip of `dataset` (deterministic, no noise) into shards under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(ul.parameters()).device
    ul.eval()
    z_buf, y_buf, shards, latent_shape = None, None, [], None

    def write_shard(z, y):
        name = f"latents-{len(shards):05d}.safetensors"
        tmp = out / f".{name}.tmp"
        save_file({"z_clean": z.contiguous(), "labels": y.contiguous()}, str(tmp))
        os.replace(tmp, out / name)
        shards.append({"file": name, "count": len(y)})

    for video, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        z = ul.encode(video.to(device)).float().cpu()
        if not torch.isfinite(z).all():  # the data edge: the training step never checks values
            raise ValueError(
                "the encoder returned NaN or inf latents; check the stage-1 checkpoint (was its "
                "training stable?) and the input clips"
            )
        latent_shape = list(z.shape[1:])
        y = torch.as_tensor(labels).long()
        z_buf = z if z_buf is None else torch.cat([z_buf, z])
        y_buf = y if y_buf is None else torch.cat([y_buf, y])
        while len(y_buf) >= shard_size:  # every shard but the last holds exactly shard_size
            write_shard(z_buf[:shard_size], y_buf[:shard_size])
            z_buf, y_buf = z_buf[shard_size:], y_buf[shard_size:]
    if y_buf is not None and len(y_buf):
        write_shard(z_buf, y_buf)
    manifest = {
        "encoder_fingerprint": encoder_fingerprint(ul),
        "latent_shape": latent_shape,
        "count": sum(s["count"] for s in shards),
        "num_classes": getattr(dataset, "num_classes", 0),
        "shards": shards,
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)  # the manifest is written last: its presence means complete
    return out


class LatentShards(Dataset):
    """Pre-computed latents as a dataset of `(z_clean, label)`, read lazily from the shards."""

    def __init__(self, directory):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.directory} holds no {MANIFEST}; write latents with `ulvideo encode` first"
            )
        self.manifest = json.loads(manifest_path.read_text())
        self.num_classes = self.manifest["num_classes"]
        self.index = [
            (i, j) for i, s in enumerate(self.manifest["shards"]) for j in range(s["count"])
        ]
        self._open = {}

    def check_encoder(self, ul) -> None:
        """Raise unless these latents were made by `ul`'s encoder."""
        if self.manifest["encoder_fingerprint"] != encoder_fingerprint(ul):
            raise ValueError(
                f"the latents in {self.directory} were made by a different encoder than the stage-1 "
                "checkpoint; re-encode the dataset with this checkpoint"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index):
        shard, row = self.index[index]
        if shard not in self._open:  # opened lazily, so each DataLoader worker has its own handles
            path = self.directory / self.manifest["shards"][shard]["file"]
            self._open[shard] = safe_open(str(path), framework="pt")
        f = self._open[shard]
        return f.get_slice("z_clean")[row : row + 1][0], int(
            f.get_slice("labels")[row : row + 1][0]
        )

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}


class BucketView(Dataset):
    """The items of one source of a Mixture in one bucket, in order (epoch 0, step 0)."""

    def __init__(self, mixture, source: int, bucket: int):
        self.mixture, self.source, self.bucket = mixture, source, bucket
        self.group = mixture.groups[source][bucket]
        self.num_classes = mixture.num_classes

    def __len__(self) -> int:
        return len(self.group)

    def __getitem__(self, row: int):
        return self.mixture[(self.source, self.bucket, int(self.group[row]), 0, 0, row)]


def precompute_bucketed_latents(ul, mixture, weights, out_dir, **options) -> Path:
    """Encode a Mixture into latent shards per bucket and source (precompute_latents each, with
    `options`), and `buckets.json`; stage 2 trains on them with `--latents_dir out_dir`."""
    from ..data.buckets import format_buckets

    out = Path(out_dir)
    folders = []  # [bucket, source, folder relative to out]
    for b, bucket in enumerate(mixture.buckets):
        for s in range(len(mixture.names)):
            if len(mixture.groups[s][b]):
                folder = f"{bucket.name}/source{s}"
                precompute_latents(ul, BucketView(mixture, s, b), out / folder, **options)
                folders.append([b, s, folder])
    index = {
        "buckets": format_buckets(mixture.buckets),
        "sources": mixture.names,
        "weights": list(weights),
        "num_classes": mixture.num_classes,
        "folders": folders,
    }
    tmp = out / f".{BUCKETS}.tmp"
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, out / BUCKETS)  # written last, as the shards' manifests are
    return out


def is_bucketed(directory) -> bool:
    """Whether `directory` holds latents per bucket (precompute_bucketed_latents)."""
    return (Path(directory) / BUCKETS).is_file()


class BucketedLatents(Dataset):
    """Latents per bucket and source as a Mixture-like dataset: `groups`, `buckets`, `plan`, and
    items keyed `(source, bucket, index, ...)`, read from each folder's LatentShards."""

    def __init__(self, directory, seed: int = 0):
        from ..data.buckets import parse_buckets

        self.directory, self.seed = Path(directory), seed
        index = json.loads((self.directory / BUCKETS).read_text())
        self.buckets, self.names = parse_buckets(index["buckets"]), index["sources"]
        self.weights, self.num_classes = tuple(index["weights"]), index["num_classes"]
        self.shards = {
            (s, b): LatentShards(self.directory / folder) for b, s, folder in index["folders"]
        }
        self.groups = [
            [np.arange(len(self.shards[(s, b)]) if (s, b) in self.shards else 0)
             for b in range(len(self.buckets))]
            for s in range(len(self.names))
        ]  # fmt: skip

    def plan(self, weights, world: int):
        from ..data.buckets import BatchPlan

        return BatchPlan(self.groups, weights, self.buckets, world, self.seed)

    def check_encoder(self, ul) -> None:
        for shards in self.shards.values():
            shards.check_encoder(ul)

    def __len__(self) -> int:
        return sum(len(shards) for shards in self.shards.values())

    def __getitem__(self, key):
        source, bucket, index = key[:3]
        return self.shards[(source, bucket)][index]


def first_shards(directory) -> Path:
    """The folder of latent shards in `directory`: itself, or its first bucket's first source."""
    if is_bucketed(directory):
        return (
            Path(directory) / json.loads((Path(directory) / BUCKETS).read_text())["folders"][0][2]
        )
    return Path(directory)


def latent_logsnr_shift(directory, max_shards: int | None = None) -> float:
    """2 ln(1/s) for the std s of the latents stored in `directory` (of its first `max_shards`
    shards, or all): latents of std s have SNR s^2 exp(lambda), so this is the lambda at which
    their SNR is 1 (where a base model's loss weight and training draws belong for unit-variance
    data at lambda = 0). Of latents per bucket: of the first bucket's first source."""
    shards = LatentShards(first_shards(directory))
    total, square, count = 0.0, 0.0, 0
    for shard in shards.manifest["shards"][:max_shards]:
        with safe_open(str(shards.directory / shard["file"]), framework="pt") as f:
            z = f.get_tensor("z_clean").double()
        total, square, count = (
            total + z.sum().item(),
            square + z.square().sum().item(),
            count + z.numel(),
        )
    variance = square / count - (total / count) ** 2
    return -math.log(variance)

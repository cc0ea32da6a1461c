"""`ulvideo compare-latents`: UL latents against KL-regularised (Stable-Diffusion style) latents
at equal rate, by what stage 2 costs to learn them.

For each regulariser it brackets the rate knob (UL: the loss factor c_lf; KL: the weight beta)
until stage 1 lands within `--tolerance` of `--target_bpp` bits/pixel (each probe is a full
stage-1 run, logged; the chosen probe's run is the arm's stage 1), then trains the same base
model on each arm's latents with the same budget, data and seed, and scores it at
`--eval_points` points of its budget: class accuracy of class-conditional samples (the demo's
digit classifier, on the demo data), FVD (with the I3D weights installed) and the stage-2 loss.
It writes `compare.json` (one row per arm and checkpoint) and `compare.png` (sample quality
against stage-2 training FLOPs, one curve per arm).

    ulvideo compare-latents --data demo --output_dir runs/compare
    accelerate launch -m ulvideo.compare --recipe recipes/kinetics600_stage1.py \\
        --data_root /data/kinetics600 --target_bpp 0.05 --output_dir runs/k600_compare
"""

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.state import PartialState
from accelerate.utils import broadcast_object_list
from torch.utils.data import Subset

from .errors import run_main
from .flags import add_dataclass_arguments
from .train.config import TrainConfig, parse_config, short_run_warmup, switch_stage
from .train.rd import optional_i3d, parse_driver, score_reconstruction

# the demo's stage 1 is 1100 steps; at the demo's per-step times (0.54 s stage 1, 0.19 s stage 2
# on 2 idle cores) the UL run, up to 3 KL probes, both stage 2s and their scoring take ~30 minutes
COMPARE_STAGE1_STEPS = 500
KNOBS = {"ul": "loss_factor", "kl": "kl_weight"}  # the rate knob of each regulariser
RATE_RISES = {"ul": True, "kl": False}  # does bits/pixel rise with the knob?


@dataclass
class CompareConfig:
    """The target rate, its search, and stage 2's budget and scoring."""

    # bits/pixel on --eval_frames clips; unset: the rate of the first arm's first probe (UL at
    # its default c_lf), so only the other arm is searched
    target_bpp: float | None = None
    tolerance: float = 0.1  # relative: a probe within 10% of the target is taken
    max_probes: int = 3  # stage-1 runs per arm at most
    ul_knob: float = 6.0  # the first c_lf probed (the demo's)
    # the first beta probed: on the demo (its 500 stage-1 steps) beta 3 / 0.75 / 0.886 gave
    # 0.018 / 0.197 / 0.160 bits/pixel against UL's 0.148 at c_lf 6 (the KL rate keeps falling
    # with training: at 200 steps beta 1 gave 0.226)
    kl_knob: float = 0.9
    knob_step: float = 4.0  # the factor between probes until the target is bracketed
    arms: str = "ul,kl"  # the regularisers compared, in this order
    base_preset: str = "tiny"
    stage2_steps: int = 600
    stage2_batch_size: int = 64
    stage2_lr: float = 3e-3
    eval_points: int = 4  # stage-2 checkpoints scored, evenly spaced over its budget
    eval_split: str = "test"  # the split scored (Kinetics, ImageNet: val)
    eval_frames: int = 17  # clips of stage 2 and of every score (1 for images)
    stage2_clips: int | None = None  # stage 2 trains on the first this many clips (None: all)
    eval_videos: int = 16  # test clips reconstructed per probe
    eval_batch_size: int = 8
    num_samples: int = 32  # class-conditional samples per stage-2 checkpoint
    base_steps: int = 32
    decoder_steps: int = 32
    cfg_scale: float = 6.0
    accuracy_threshold: float = 0.3  # the summary's "FLOPs to reach this class accuracy"
    fvd: bool = True  # FVD and rFVD, when the I3D weights are installed

    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    def validate(self) -> None:
        if (self.target_bpp is not None and not self.target_bpp > 0) or not 0 < self.tolerance < 1:
            raise ValueError(
                f"--target_bpp must be > 0 and --tolerance in (0, 1), got {self.target_bpp} "
                f"and {self.tolerance}"
            )
        if unknown := [a for a in self.arm_list if a not in KNOBS]:
            raise ValueError(f"--arms: unknown {unknown}; choose from {list(KNOBS)}")
        if self.max_probes < 1 or not self.knob_step > 1:
            raise ValueError("--max_probes must be >= 1 and --knob_step > 1")
        if self.eval_points < 1 or self.stage2_steps < self.eval_points:
            raise ValueError(
                f"--eval_points {self.eval_points} needs 1 to --stage2_steps "
                f"({self.stage2_steps}) checkpoints"
            )


def bracket(measure, first: float, target: float, tolerance: float, max_probes: int,
            step: float, rises: bool, log=print) -> tuple[list[dict], dict, bool]:  # fmt: skip
    """Probe `measure(knob) -> (bits/pixel, result)` until one lands within `tolerance` of
    `target`: steps of `step` (x or /) towards the target until it is bracketed, then the
    log-log interpolation between the nearest probes on either side. Returns every probe
    ({knob, bits_per_pixel, result}), the chosen one (the closest) and whether it is within
    the tolerance."""
    probes, knob = [], first
    for _ in range(max_probes):
        bits, result = measure(knob)
        probes.append({"knob": knob, "bits_per_pixel": bits, "result": result})
        off = bits / target - 1
        log(f"probe {len(probes)}: knob {knob:.4g} -> {bits:.4g} bits/pixel ({off:+.1%} of target)")
        if abs(off) <= tolerance:
            break
        below = [p for p in probes if p["bits_per_pixel"] < target]
        above = [p for p in probes if p["bits_per_pixel"] > target]
        if below and above:  # bracketed: interpolate log bits against log knob
            lo = min(below, key=lambda p: target / p["bits_per_pixel"])
            hi = min(above, key=lambda p: p["bits_per_pixel"] / target)
            slope = math.log(hi["bits_per_pixel"] / lo["bits_per_pixel"]) / math.log(
                hi["knob"] / lo["knob"]
            )
            knob = lo["knob"] * math.exp(math.log(target / lo["bits_per_pixel"]) / slope)
        else:  # towards the target: more bits where the rate rises with the knob, or fewer
            knob = knob * step if (bits < target) == rises else knob / step
    chosen = min(probes, key=lambda p: abs(math.log(p["bits_per_pixel"] / target)))
    return probes, chosen, abs(chosen["bits_per_pixel"] / target - 1) <= tolerance


def stage1_defaults(recipe, train_argv: list[str]) -> TrainConfig:
    """The stage-1 run every probe starts from: the recipe's defaults, or on the demo data (no
    recipe) the demo's stage 1, with the flags given applied over them."""
    probe = parse_config(recipe or TrainConfig, train_argv)
    if recipe is not None or probe.data != "demo":
        return probe
    from .demo import DemoConfig, stage1_config

    given = _given_fields(train_argv)
    demo = DemoConfig(stage1_steps=given.get("max_steps", COMPARE_STAGE1_STEPS))
    defaults = stage1_config(demo, "runs/compare").to_dict()
    return parse_config(TrainConfig, train_argv, defaults=defaults)


def _given_fields(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(add_help=False)
    add_dataclass_arguments(parser, TrainConfig)
    return {k: v for k, v in vars(parser.parse_known_args(argv)[0]).items() if v is not None}


def compare(train_config: TrainConfig, cmp: CompareConfig) -> dict:
    """Run the comparison; write compare.json and compare.png into train_config.output_dir."""
    from .data import build_dataset

    cmp.validate()
    if train_config.stage != 1:
        raise ValueError("compare-latents starts from a stage-1 configuration: use --stage 1")
    for arm in cmp.arm_list:  # every arm's configuration errors before the first run trains
        _probe_config(train_config, arm, getattr(cmp, f"{arm}_knob")).validate()
    out = Path(train_config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    test = build_dataset(
        train_config.data, train_config.data_root, cmp.eval_split, cmp.eval_frames,
        train_config.resolution,
    )  # fmt: skip
    i3d = optional_i3d() if cmp.fvd else None
    report = {"target_bpp": cmp.target_bpp, "tolerance": cmp.tolerance, "arms": {}, "rows": []}
    for arm in cmp.arm_list:
        measure = lambda knob, arm=arm: _stage1_probe(train_config, arm, knob, test, cmp, i3d)  # noqa: E731
        if report["target_bpp"] is None:
            first = getattr(cmp, f"{arm}_knob")
            print(f"=== {arm.upper()} arm at {KNOBS[arm]} {first:g}: its rate is the target")
            measured = measure(first)
            report["target_bpp"] = measured[0]
            measure = lambda knob, m=measured: m  # noqa: E731
        print(
            f"=== {arm.upper()} arm: bracketing {KNOBS[arm]} to {report['target_bpp']:.4g} bits/pixel"
        )
        probes, chosen, within = bracket(
            measure, getattr(cmp, f"{arm}_knob"), report["target_bpp"], cmp.tolerance,
            cmp.max_probes, cmp.knob_step, RATE_RISES[arm],
        )  # fmt: skip
        note = None
        if not within:
            note = (
                f"could not bracket {report['target_bpp']:.4g} bits/pixel within {cmp.tolerance:.0%} in "
                f"{len(probes)} probes: the closest, {KNOBS[arm]} {chosen['knob']:.4g}, gives "
                f"{chosen['bits_per_pixel']:.4g}; raise --max_probes or move --{arm}_knob"
            )
            print(f"warning: {arm.upper()} arm: {note}")
        stage1 = chosen["result"]
        run = _stage2(train_config, arm, stage1, cmp)
        report["arms"][arm] = {
            "knob": KNOBS[arm],
            "value": chosen["knob"],
            "within_tolerance": within,
            "note": note,
            "probes": [
                {
                    "knob": p["knob"],
                    "bits_per_pixel": p["bits_per_pixel"],
                    "psnr": p["result"]["psnr"],
                }
                for p in probes
            ],
            "stage1": {k: v for k, v in stage1.items() if k != "config"},
            "stage1_config": stage1["config"],
            "stage2_config": run["config"],
            "training_data": run["training_data"],
        }
        if not PartialState().is_main_process:
            continue
        for row in _score_stage2(run, test, cmp, i3d):
            report["rows"].append({"arm": arm, **_stage1_metrics(stage1), **row})
            (out / "compare.json").write_text(json.dumps(report, indent=2))
    if not PartialState().is_main_process:
        return report
    report["flops_to_accuracy"] = {
        arm: next(
            (
                r["stage2_flops"]
                for r in report["rows"]
                if r["arm"] == arm and r.get("class_accuracy", -1) >= cmp.accuracy_threshold
            ),
            None,
        )  # fmt: skip
        for arm in cmp.arm_list
    }
    report["accuracy_threshold"] = cmp.accuracy_threshold
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "compare.png")
    return report


def _probe_config(train_config: TrainConfig, arm: str, knob: float) -> TrainConfig:
    out = Path(train_config.output_dir) / arm / f"stage1_{KNOBS[arm]}{knob:.4g}"
    model = {**train_config.model, "regularizer": arm, KNOBS[arm]: knob}
    return dataclasses.replace(train_config, output_dir=str(out), model=model)


def _stage1_probe(train_config, arm, knob, test, cmp, i3d) -> tuple[float, dict]:
    from .train.trainer import train

    config = _probe_config(train_config, arm, knob)
    result = train(config)
    scores = None
    if result.accelerator.is_main_process:  # scored once; every process takes the same knobs
        scores = score_reconstruction(result.ema, test, _sweep(cmp), i3d)
        scores.update(export=str(Path(config.output_dir) / "final"), config=_comparable(config))
    scores = broadcast_object_list([scores])[0]
    return scores["bits_per_pixel"], scores


def _sweep(cmp: CompareConfig):
    from .train.rd import SweepConfig

    return SweepConfig(
        eval_videos=cmp.eval_videos,
        eval_batch_size=cmp.eval_batch_size,
        eval_decode_steps=cmp.decoder_steps,
    )


def _comparable(config: TrainConfig) -> dict:
    # what must be equal between the arms: all but the output folder (and the regulariser)
    return {k: v for k, v in config.to_dict().items() if k != "output_dir"}


def _stage2(train_config: TrainConfig, arm: str, stage1: dict, cmp: CompareConfig) -> dict:
    """Encode the training clips once, then train the base model on them (as the demo does)."""
    from .data import build_dataset
    from .demo import base_patch_size
    from .pipeline import load_autoencoder
    from .train.latents import LatentShards, precompute_latents
    from .train.trainer import train

    out = Path(train_config.output_dir) / arm
    ul = load_autoencoder(stage1["export"])
    train_clips = build_dataset(
        train_config.data, train_config.data_root, "train", cmp.eval_frames, train_config.resolution
    )
    if cmp.stage2_clips is not None:
        train_clips = Subset(train_clips, range(min(cmp.stage2_clips, len(train_clips))))
        train_clips.num_classes = train_clips.dataset.num_classes
    latents = out / "stage2_latents"
    if PartialState().is_main_process:
        precompute_latents(ul, train_clips, latents, batch_size=16)
    PartialState().wait_for_everyone()
    # the latents' scale comes with the stage-1 export (ulvideo.latent_scale)
    model = {"patch_size": base_patch_size(ul.config.spatial_downsample)}
    every = cmp.stage2_steps // cmp.eval_points
    config = switch_stage(
        train_config,
        2,
        base_preset=cmp.base_preset,
        model=model,
        output_dir=str(out / "stage2"),
        stage1_checkpoint=stage1["export"],
        latents_dir=str(latents),
        frames=cmp.eval_frames,
        batch_size=cmp.stage2_batch_size,
        lr=cmp.stage2_lr,
        max_steps=cmp.stage2_steps,
        lr_warmup_steps=short_run_warmup(cmp.stage2_steps),
        class_conditional=LatentShards(latents).num_classes > 0,
        checkpoint_every=every,
        eval_every=cmp.stage2_steps,
        keep_last=cmp.eval_points + 1,
        resume=None,
    )
    train(config)
    return {
        "run": Path(config.output_dir),
        "config": _comparable(config) | {"stage1_checkpoint": None, "latents_dir": None},
        "training_data": _shards_fingerprint(latents),
        "every": every,
    }


def _shards_fingerprint(directory) -> dict:
    """The training clips' count and the sha256 of their labels in order: equal for equal data."""
    from .train.latents import LatentShards

    shards = LatentShards(directory)
    labels = [shards[i][1] for i in range(len(shards))]
    return {"count": len(labels), "labels_sha256": hashlib.sha256(str(labels).encode()).hexdigest()}


def _stage1_metrics(stage1: dict) -> dict:
    keys = ("bits_per_pixel", "psnr", "ssim", "rfvd")
    return {k: stage1.get(k) for k in keys}


def _score_stage2(run: dict, test, cmp: CompareConfig, i3d) -> list[dict]:
    from .models.flops import training_flops_per_example
    from .pipeline import Pipeline
    from .sample import SamplingConfig
    from .train.checkpoint import complete_checkpoints
    from .train.metrics import read_metrics

    n = min(cmp.num_samples, len(test))
    real = torch.stack([test[i][0] for i in range(n)])
    labels = torch.tensor([test[i][1] for i in range(n)])
    if i3d is not None:
        from .evaluate.fvd import video_features

        real_features = video_features(real, i3d, "tfgan")  # the first 16 frames, as FVD takes
    losses = {r["step"]: r["base_nats"] for r in read_metrics(run["run"]) if "base_nats" in r}
    config = run["config"]
    rows = []
    for checkpoint in complete_checkpoints(run["run"]):
        step = int(checkpoint.name.split("-")[1])
        pipeline = Pipeline.from_pretrained(checkpoint)
        sampling = SamplingConfig(
            base_steps=cmp.base_steps, decoder_steps=cmp.decoder_steps, cfg_scale=cmp.cfg_scale,
            batch_size=cmp.eval_batch_size, seed=config["seed"],
        )  # fmt: skip
        classes = labels if pipeline.base.num_classes else None
        videos = pipeline.generate(
            n, cmp.eval_frames, config["resolution"], sampling, labels=classes
        )
        flops = training_flops_per_example(
            pipeline.autoencoder.config, "stage2", cmp.eval_frames,
            config["resolution"], config["resolution"], pipeline.base_config,
        )  # fmt: skip
        row = {
            "stage2_step": step,
            "stage2_fraction": step / cmp.stage2_steps,
            "stage2_flops": step * config["batch_size"] * flops,
            "stage2_loss": losses[max(logged)]
            if (logged := [s for s in losses if s <= step])
            else None,
        }
        if config["data"] == "demo":
            from .evaluate.digits import class_accuracy

            # MovingDigits draws digits half the canvas wide
            row["class_accuracy"] = class_accuracy(videos, labels, config["resolution"] // 2)
        if i3d is not None:
            row["fvd"] = _fvd(real_features, videos, i3d)
        rows.append(row)
        print(
            f"stage 2 step {step}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        )
    return rows


def _fvd(real_features, fake, i3d) -> float:
    from .evaluate.fvd import fvd_report, protocol_settings, video_features

    protocol = protocol_settings(i3d, "tfgan")
    fake_features = video_features(fake, i3d, "tfgan")
    return fvd_report(real_features, fake_features, 1, protocol, len(fake))["fvd"]


def plot(report: dict, path: Path) -> None:
    """Sample quality (class accuracy, else FVD, else the stage-2 loss) against stage-2 training
    FLOPs, one curve per arm (PSNR in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("class_accuracy", "fvd", "stage2_loss")  # the first that was measured
    metric = next(m for m in names if any(r.get(m) is not None for r in report["rows"]))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arm, info in report["arms"].items():
        rows = [r for r in report["rows"] if r["arm"] == arm and r.get(metric) is not None]
        s1 = info["stage1"]
        label = (
            f"{arm.upper()} ({info['knob']} {info['value']:.3g}): {s1['bits_per_pixel']:.3f} "
            f"bits/pixel, PSNR {s1['psnr']:.1f} dB"
        )
        ax.plot([r["stage2_flops"] for r in rows], [r[metric] for r in rows], "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("stage-2 training FLOPs")
    ax.set_ylabel(
        {
            "class_accuracy": "class accuracy of samples",
            "fvd": "FVD",
            "stage2_loss": "stage-2 loss",
        }[metric]
    )
    ax.set_title(plot_title(report))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_title(report: dict) -> str:
    """Says "equal rate" only when every arm landed within the tolerance of the target."""
    target = f"{report['target_bpp']:.3g} bits/pixel"
    if all(info["within_tolerance"] for info in report["arms"].values()):
        return f"latents at equal rate ({target})"
    return f"latents at UNEQUAL rates (target {target} not bracketed)"


def main(argv: list[str] | None = None) -> dict:
    recipe, cmp, train_argv = parse_driver(
        argv, "ulvideo compare-latents", __doc__.split("\n")[0], CompareConfig
    )
    return compare(stage1_defaults(recipe, train_argv), cmp)


if __name__ == "__main__":
    sys.exit(run_main("python -m ulvideo.compare", main))

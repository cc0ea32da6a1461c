"""The training configuration: one dataclass shared by the recipes and the CLI."""

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..data.registry import BUILT_IN, DATASETS
from ..flags import add_dataclass_arguments
from ..nn.attention import BACKENDS
from .stages import STAGES, Stage1Options, Stage2Options
from .trackers import trackers_for

# How clips are cut from video files (ulvideo.data.ClipSampling), and the datasets taking them.
CLIP_OPTIONS = ("frame_stride", "target_fps", "temporal_crop", "spatial_crop", "flip")
DATASET_OPTIONS = {"kinetics600": CLIP_OPTIONS, "videos": (*CLIP_OPTIONS, "split_file")}

# What `--data demo` (or a --data_mix of demo sources only) changes, unless given explicitly: the demo clips are 32x32 and
# small enough that every recipe finishes on 2 CPU cores in a few minutes.
DEMO_DEFAULTS = dict(
    resolution=32,
    batch_size=8,
    max_steps=300,
    lr_warmup_steps=20,
    checkpoint_every=100,
    eval_every=100,
    log_every=10,
    lr=1e-3,
    num_workers=0,
)


def short_run_warmup(max_steps: int) -> int:
    """The learning-rate warm-up of a short run (the demo, the benchmarks): a tenth of its steps,
    at most 100."""
    return min(100, max_steps // 10 + 1)


@dataclass
class TrainConfig(Stage1Options, Stage2Options):
    """Everything a training run needs: the options of every run below, and those of its stage
    (ulvideo.train.stages: Stage1Options, Stage2Options; a run refuses the other stage's).
    Recipes subclass it to change defaults."""

    stage: int = 1  # 1: encoder + prior + decoder jointly; 2: the base model on frozen latents
    model: dict = field(default_factory=dict)  # overrides of the stage's config (preset) fields
    output_dir: str = "runs/ul"

    # data
    data: str = "demo"  # one of DATASETS
    data_root: str | None = None
    frames: int = 17
    resolution: int = 128
    num_workers: int = 4
    split_file: str | None = None  # videos: a `path [label]` list, e.g. UCF-101's trainlist01.txt
    frame_stride: int = 1  # video files: every n-th frame
    target_fps: float | None = None  # instead of frame_stride: stride nearest to video fps / this
    temporal_crop: str | None = None  # "random" | "center" first frame; None: random if training
    spatial_crop: str | None = None  # "random" | "center" window; None: random if training
    flip: bool | None = None  # mirror training clips with probability 1/2; None: yes
    # a mixture of datasets instead of --data/--data_root (ulvideo.data.mixture.MIX_FORMAT), e.g.
    # 'videos:/data/ucf101=0.7,imagenet:/data/imagenet=0.3': each step draws a source by weight
    data_mix: str | None = None
    # shape buckets (ulvideo.data.buckets.BUCKET_FORMAT), e.g. '17x32x32=0.7:8,1x32x32=0.3:32':
    # per frames x height x width a probability and a per-process batch size; each step is one
    # bucket on every process. None: one bucket, frames x resolution x resolution at batch_size
    buckets: str | None = None

    # optimisation
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at max_steps
    lr_warmup_steps: int = 1000  # linear learning-rate warm-up, then cosine decay
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    clip_grad: float = 1.0
    ema_decay: float = 0.999
    max_steps: int = 100_000
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    cpu_bf16: bool = False  # keep bf16 on a CPU (else fp32 there: bf16 autocast is ~28x slower)
    seed: int = 0
    cpu: bool = False  # force the CPU even where CUDA exists
    # runtime switches, never saved with the model
    attention_backend: str | None = None  # None = auto: xformers on CUDA when installed, else SDPA
    activation_checkpointing: bool = False  # recompute transformer blocks in the backward pass
    compile: bool = False  # torch.compile each transformer / residual block in place

    # bookkeeping
    peak_tflops: float | None = None  # per process (GPU): model FLOPs utilisation (mfu) is logged
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 5000
    keep_last: int = 3
    resume: str | None = "auto"  # "auto" (latest complete checkpoint), a path, or None
    max_nonfinite: int = 20  # consecutive non-finite steps before the run stops
    # trackers beside metrics.jsonl (ulvideo.train.trackers): none | tensorboard | wandb | all
    report_to: str = "none"

    def validate(self) -> None:
        """Raise a clear error for a configuration that cannot run, before anything is built."""
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if self.data_mix is not None:
            self._validate_mixture()
        elif self.data not in BUILT_IN and self.latents_dir is None:
            if self.data_root is None:
                raise ValueError(f"--data {self.data} needs --data_root (the dataset's folder)")
            if not Path(self.data_root).is_dir():
                raise FileNotFoundError(f"data_root {self.data_root!r} does not exist")
        if self.buckets is not None:
            self.bucket_table()
            if self.latents_dir is not None:
                raise ValueError(
                    "--buckets reads clips; latent shards (--latents_dir) hold one shape: drop one"
                )
        used = {name for source in self.sources() for name in DATASET_OPTIONS.get(source.name, ())}
        ignored = [
            f"--{name}"
            for name in DATASET_OPTIONS["videos"]
            if name not in used and getattr(self, name) != _default(type(self), name)
        ]
        if ignored:
            raise ValueError(
                f"--data {self.data} does not use {', '.join(ignored)}: drop them, or use "
                "--data videos (kinetics600 takes all but --split_file)"
            )
        other_stage_options(self, self.stage)
        STAGES[self.stage].options.check(self)
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "checkpoint_every",
                     "eval_every", "keep_last"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attention_backend not in (None, *BACKENDS):
            raise ValueError(
                f"attention_backend must be one of {BACKENDS} (or unset), got {self.attention_backend!r}"
            )
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(
                f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}"
            )
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ValueError(
                f"peak_tflops must be > 0 (the accelerator's dense peak, e.g. 989 for an H100 in "
                f"bf16), got {self.peak_tflops}"
            )
        trackers_for(self.report_to)  # a known name, installed

    @property
    def bucketed(self) -> bool:
        """Whether the run reads a mixture in shape buckets (--data_mix or --buckets)."""
        return self.data_mix is not None or self.buckets is not None

    def sources(self):
        """The mixture's sources: --data_mix, else --data at weight 1."""
        from ..data.mixture import Source, parse_data_mix

        if self.data_mix is not None:
            return parse_data_mix(self.data_mix)
        return (Source(self.data, None if self.data in BUILT_IN else self.data_root, 1.0),)

    def bucket_table(self):
        """The shape buckets: --buckets, else frames x resolution x resolution at batch_size."""
        from ..data.buckets import Bucket, parse_buckets

        if self.buckets is not None:
            return parse_buckets(self.buckets)
        return (Bucket(self.frames, self.resolution, self.resolution, 1.0, self.batch_size),)

    def _validate_mixture(self) -> None:
        given = [f"--{n}" for n in ("data_root", "latents_dir") if getattr(self, n) is not None]
        if self.data != _default(type(self), "data"):
            given.append("--data")
        if given:
            raise ValueError(
                f"--data_mix names the datasets and their roots: drop {', '.join(given)}"
            )
        for source in self.sources():
            if source.root is not None and not Path(source.root).is_dir():
                raise FileNotFoundError(f"data_mix root {source.root!r} does not exist")
        self.bucket_table()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_config(
    cls: type[TrainConfig] = TrainConfig,
    argv: list[str] | None = None,
    defaults: dict | None = None,
) -> TrainConfig:
    """Build `cls` from command-line flags named after its fields (`--lr 3e-4 --model '{...}'`),
    over `defaults` (field values) where given. `--model` overrides single fields of the
    recipe's (or the defaults') model overrides: the rest of them stay."""
    parser = argparse.ArgumentParser(description=cls.__doc__)
    add_dataclass_arguments(parser, cls)
    flags = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    defaults = defaults or {}
    if "model" in flags:
        flags["model"] = {**defaults.get("model", _default(cls, "model")), **flags["model"]}
    given = {**defaults, **flags}
    other_stage_options(flags, given.get("stage", _default(cls, "stage")))  # even at default
    mix = given.get("data_mix", _default(cls, "data_mix"))
    if on_demo_data(given.get("data", _default(cls, "data")), mix):
        changed = {
            k: v for k, v in DEMO_DEFAULTS.items() if k not in given and v != _default(cls, k)
        }
        if changed:  # say so: these are training defaults, not data settings
            print(
                "--data demo sets " + " ".join(f"--{k} {v}" for k, v in changed.items())
                + " (give a flag to keep another value)",
                file=sys.stderr,
            )  # fmt: skip
        given = {**DEMO_DEFAULTS, **given}
    return cls(**given)


def other_stage_options(given, stage: int) -> None:
    """Refuse the options of the stage a run is not: `given` is a TrainConfig (its fields that
    differ from its class's defaults count) or a dict of command-line flags (all count)."""
    if isinstance(given, TrainConfig):
        cls = type(given)
        given = {
            f.name: getattr(given, f.name)
            for f in dataclasses.fields(given)
            if getattr(given, f.name) != _default(cls, f.name)
        }
    if stage == 2 and "preset" in given:
        raise ValueError(
            f"--preset {given['preset']} names a stage-1 autoencoder, which stage 2 loads from "
            "--stage1_checkpoint: use --base_preset for the base model's sizes"
        )
    for other, stage_type in STAGES.items():
        names = [f"--{f.name}" for f in dataclasses.fields(stage_type.options) if f.name in given]
        if other != stage and names:
            raise ValueError(
                f"{', '.join(names)}: option(s) of stage {other}, not of this stage-{stage} run; "
                "drop them"
            )


def switch_stage(config: TrainConfig, stage: int, **changes) -> TrainConfig:
    """`config` for a run of `stage`, with the other stage's options back at their defaults."""
    reset = {
        f.name: _default(type(config), f.name)
        for other, stage_type in STAGES.items()
        if other != stage
        for f in dataclasses.fields(stage_type.options)
    }
    return dataclasses.replace(config, **{**reset, "stage": stage, **changes})


def on_demo_data(data: str, data_mix: str | None) -> bool:
    """Whether a run reads only the built-in demo data (DEMO_DEFAULTS apply)."""
    if data_mix is None:
        return data == "demo"
    from ..data.mixture import parse_data_mix

    return all(source.name in BUILT_IN for source in parse_data_mix(data_mix))


def _default(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default

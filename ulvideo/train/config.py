"""The training configuration: one dataclass shared by the recipes and the CLI."""

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..data.registry import BUILT_IN, DATASETS
from ..flags import add_dataclass_arguments
from ..hub import is_repo_id
from ..nn.attention import BACKENDS
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
    warmup_steps=20,
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
class TrainConfig:
    """Everything a training run needs. Recipes subclass it to change defaults."""

    stage: int = 1  # 1: encoder + prior + decoder jointly; 2: the base model on frozen latents
    preset: str = "tiny"  # stage 1: a name in ulvideo.models.AUTOENCODER_PRESETS
    base_preset: str | None = None  # stage 2: a name in ulvideo.models.BASE_PRESETS
    model: dict = field(default_factory=dict)  # overrides of the stage's config (preset) fields
    output_dir: str = "runs/ul"

    # data
    data: str = "demo"  # one of DATASETS
    data_root: str | None = None
    frames: int = 17
    resolution: int = 128
    num_workers: int = 4
    latents_dir: str | None = None  # stage 2: train from pre-computed latent shards
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
    warmup_steps: int = 1000
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    clip_grad: float = 1.0
    # stage-1 latent warm-up (UnifiedLatents.stage1_loss, docs/STAGE1_DIAGNOSTICS.md): for
    # latent_hold_steps the rate's gradient is kept out of the encoder and the decoder is also
    # trained to read z0 (L_read); both then ramp linearly to plain UL over latent_ramp_steps.
    # Without it the rate removes the latent before the decoder reads it. Unset (None), each
    # lasts as long as the learning-rate warm-up: the rate reaches the encoder only once the
    # decoder trains at its peak learning rate, and plain UL starts at 2 x warmup_steps
    latent_hold_steps: int | None = None
    latent_ramp_steps: int | None = None
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

    # stage 2
    stage1_checkpoint: str | None = None  # an export or checkpoint directory of a stage-1 run
    context_frames: int = 0  # latent frames given clean (frame prediction); 2 = 5 pixel frames
    context_prob: float = 1.0  # fraction of batches trained with context (the rest unconditional)
    class_conditional: bool = False  # condition the base model on the dataset's labels
    label_dropout: float = 0.1  # classifier-free guidance: labels replaced by the null class

    # bookkeeping
    peak_tflops: float | None = None  # per process (GPU): model FLOPs utilisation (mfu) is logged
    log_every: int = 50
    eval_every: int = 5000
    eval_decode_steps: int = 32
    checkpoint_every: int = 5000
    keep_last: int = 3
    resume: str | None = "auto"  # "auto" (latest complete checkpoint), a path, or None
    max_nonfinite: int = 20  # consecutive non-finite steps before the run stops
    # trackers beside metrics.jsonl (ulvideo.train.trackers): none | tensorboard | wandb | all
    report_to: str = "none"

    def latent_warmup_steps(self) -> tuple[int, int]:
        """(hold, ramp) of stage 1's latent warm-up: the fields, or the learning-rate warm-up's
        length for each one left unset."""
        hold, ramp = self.latent_hold_steps, self.latent_ramp_steps
        return (self.warmup_steps if hold is None else hold,
                self.warmup_steps if ramp is None else ramp)  # fmt: skip

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
        if self.stage == 1 and self.base_preset is not None:
            raise ValueError("--base_preset names the stage-2 base model: drop it in stage 1")
        if self.stage == 2:
            if self.base_preset is None:
                raise ValueError(
                    "stage 2 needs --base_preset: the base model's sizes (tiny, small, medium; "
                    "the autoencoder's come with --stage1_checkpoint)"
                )
            if self.preset != _default(type(self), "preset"):
                raise stage2_preset_error(self.preset)
            if self.stage1_checkpoint is None:
                raise ValueError("stage 2 needs --stage1_checkpoint (an export of a stage-1 run)")
            if not (Path(self.stage1_checkpoint).exists() or is_repo_id(self.stage1_checkpoint)):
                raise FileNotFoundError(
                    f"stage1_checkpoint {self.stage1_checkpoint!r} does not exist (give an export "
                    "folder or a hub repo id org/name)"
                )
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "checkpoint_every",
                     "eval_every", "keep_last"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.latent_warmup_steps()) < 0:
            raise ValueError(
                "latent_hold_steps and latent_ramp_steps must be >= 0 (0 and 0 is plain UL), got "
                f"{self.latent_hold_steps} and {self.latent_ramp_steps}"
            )
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
        if not 0 <= self.context_prob <= 1:
            raise ValueError(f"context_prob must be in [0, 1], got {self.context_prob}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
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
    if "preset" in flags and given.get("stage", _default(cls, "stage")) == 2:
        raise stage2_preset_error(flags["preset"])  # even the default's: stage 2 never reads it
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


def stage2_preset_error(preset: str) -> ValueError:
    """The one error for --preset in a stage-2 run, whichever check finds it."""
    return ValueError(
        f"--preset {preset} names a stage-1 autoencoder, which stage 2 loads from "
        "--stage1_checkpoint: use --base_preset for the base model's sizes"
    )


def on_demo_data(data: str, data_mix: str | None) -> bool:
    """Whether a run reads only the built-in demo data (DEMO_DEFAULTS apply)."""
    if data_mix is None:
        return data == "demo"
    from ..data.mixture import parse_data_mix

    return all(source.name in BUILT_IN for source in parse_data_mix(data_mix))


def _default(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default

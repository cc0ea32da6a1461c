"""What each stage trains, with its own options: the trainer knows stages, not networks.

A stage (the `STAGES` table) is a `Stage`: an nn.Module, so that DDP/FSDP wrap it, with the one
interface `Stage` documents. Each stage's options are a dataclass here; `TrainConfig`
(ulvideo.train.config) joins them with the options every run has, so that the command line stays
flat.
"""

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.state import PartialState
from torch import nn

from ..diffusion import ShiftedCosine, base_loss, stratified_t
from ..diffusion.noise import TrainingDraws
from ..geometry import latent_grid
from ..hub import is_repo_id
from ..latent_scale import LatentScaling, measure_latent_scale
from ..models import (
    AutoencoderConfig,
    autoencoder_preset,
    base_preset,
    build_base,
    check_video_shape,
    training_flops_per_example,
)
from ..pipeline import (
    AUTOENCODER,
    Pipeline,
    autoencoder_export,
    load_autoencoder,
    save_stage2_checkpoint,
)
from ..serialization import read_config
from ..ul import UnifiedLatents
from .latents import latent_logsnr_shift

MIN_LATENT_GAP_DB = 1.0  # below this swapped-latent PSNR gap, stage 1 has collapsed
# beyond this distance from 2 ln(1/std) of the latents, stage 2's training draws miss their signal
MAX_SCHEDULE_SHIFT_ERROR = 1.5
REFERENCE_CLIPS = 32  # the fixed clips stage 1 measures its latent scale on


@dataclass
class Stage1Options:
    preset: str = "tiny"  # a name in ulvideo.models.AUTOENCODER_PRESETS
    # the latent warm-up (UnifiedLatents.stage1_loss, docs/STAGE1_DIAGNOSTICS.md): for
    # latent_hold_steps the rate's gradient is kept out of the encoder and the decoder is also
    # trained to read z0 (L_read); both then ramp linearly to plain UL over latent_ramp_steps.
    # Without it the rate removes the latent before the decoder reads it. Unset (None), each
    # lasts as long as the learning-rate warm-up: the rate reaches the encoder only once the
    # decoder trains at its peak learning rate, and plain UL starts at 2 x lr_warmup_steps
    latent_hold_steps: int | None = None
    latent_ramp_steps: int | None = None
    # the hold also lasts until an evaluation measures at least this swapped-latent gap in dB
    # (eval_latent_gap_db: the decoder reads the latent), so that the rate cannot remove a latent
    # the decoder has not learned to read; None: the hold ends after latent_hold_steps alone (as
    # it does in a run with no evaluation split)
    latent_hold_gap_db: float | None = None
    eval_decode_steps: int = 32  # decoder steps of the evaluation's reconstructions

    def check(self) -> None:
        if min(self.latent_warmup_steps()) < 0:
            raise ValueError(
                "latent_hold_steps and latent_ramp_steps must be >= 0 (0 and 0 is plain UL), got "
                f"{self.latent_hold_steps} and {self.latent_ramp_steps}"
            )

    def latent_warmup_steps(self) -> tuple[int, int]:
        """(hold, ramp) of the latent warm-up: the fields, or the learning-rate warm-up's length
        for each one left unset."""
        hold, ramp = self.latent_hold_steps, self.latent_ramp_steps
        return (self.lr_warmup_steps if hold is None else hold,
                self.lr_warmup_steps if ramp is None else ramp)  # fmt: skip


@dataclass
class Stage2Options:
    base_preset: str | None = None  # a name in ulvideo.models.BASE_PRESETS
    stage1_checkpoint: str | None = None  # an export or checkpoint directory of a stage-1 run
    latents_dir: str | None = None  # train from pre-computed latent shards (ulvideo encode)
    # pixel frames given clean (frame prediction), 1 + k x temporal_downsample: 5 is K600's
    context_frames: int = 0
    context_prob: float = 1.0  # fraction of batches trained with context (the rest unconditional)
    class_conditional: bool = False  # condition the base model on the dataset's labels
    label_dropout: float = 0.1  # classifier-free guidance: labels replaced by the null class

    def check(self) -> None:
        if self.base_preset is None:
            raise ValueError(
                "stage 2 needs --base_preset: the base model's sizes (tiny, small, medium; the "
                "autoencoder's come with --stage1_checkpoint)"
            )
        if self.stage1_checkpoint is None:
            raise ValueError("stage 2 needs --stage1_checkpoint (an export of a stage-1 run)")
        if not (Path(self.stage1_checkpoint).exists() or is_repo_id(self.stage1_checkpoint)):
            raise FileNotFoundError(
                f"stage1_checkpoint {self.stage1_checkpoint!r} does not exist (give an export "
                "folder or a hub repo id org/name)"
            )
        if self.context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {self.context_frames}")
        if not 0 <= self.context_prob <= 1:
            raise ValueError(f"context_prob must be in [0, 1], got {self.context_prob}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")


def latent_warmup(hold: int, ramp: int, step: int) -> float:
    """The latent warm-up after `step` optimizer steps: 1 for `hold` steps, then a linear ramp
    down to 0 (plain UL) over `ramp`."""
    if step < hold:
        return 1.0
    return max(0.0, 1.0 - (step - hold + 1) / max(1, ramp))


class Stage(nn.Module):
    """The interface the trainer uses:
    - `Stage.check(config, autoencoder_config)` before any data, with the autoencoder the run's
      clips must fit (`Stage.autoencoder_config_of(config)`);
    - `Stage.for_run(config, data)`: the stage of a run, built from its options and its data;
    - `network`: what the EMA tracks and the export writes;
    - `set_step(step)` before each optimizer step, and `observe(evaluations, step)` on every
      process after each evaluation (stage 1's latent warm-up follows both); `run_state()` /
      `load_run_state(state)` carry what they decided through checkpoints;
    - `forward(inputs, labels, draws) -> (loss, logs)`; `draws` (TrainingDraws) key stage 2's
      per-example randomness; stage 1's noise is drawn inside `UnifiedLatents.stage1_loss`;
    - `evaluate(ema_network, inputs, labels) -> dict`, `evaluation_warning(evaluation, step)` (one
      line when an evaluation shows a wasted run) and `training_flops(frames, height, width)`;
    - `export(ema_network, directory, final)`.
    """

    def set_step(self, step: int) -> None:
        pass

    def observe(self, evaluations: dict, step: int) -> None:
        pass

    def run_state(self) -> dict:
        return {}

    def load_run_state(self, state: dict) -> None:
        pass


class Stage1(Stage):
    """UL stage 1: encoder, prior and decoder trained jointly on L_z + L_x."""

    options = Stage1Options

    def __init__(self, model_config: AutoencoderConfig, reference_videos=None):
        super().__init__()
        self.network = UnifiedLatents(model_config)
        self.autoencoder_config = model_config
        self.reference_videos = reference_videos  # what export measures the latent scale on
        self.latent_warmup_steps = (0, 0)  # (hold, ramp): plain UL unless a run sets them
        self.hold_gap_db = None  # Stage1Options.latent_hold_gap_db, where the run evaluates
        self.hold_released_at = None  # the step the gap released the hold at, once it has
        self.warmup = 0.0  # the latent warm-up of the current step
        self.decode_steps = Stage1Options.eval_decode_steps

    @staticmethod
    def autoencoder_config_of(config) -> AutoencoderConfig:
        """The preset at the run's resolution, with `config.model` overrides."""
        return autoencoder_preset(
            config.preset, **{"resolution": config.resolution, **config.model}
        )

    @classmethod
    def for_run(cls, config, data) -> "Stage1":
        # only the main process exports, so only it reads the clips the export measures on
        main = PartialState().is_main_process
        reference = data.reference_videos(REFERENCE_CLIPS) if main else None
        stage = cls(cls.autoencoder_config_of(config), reference)
        stage.latent_warmup_steps = config.latent_warmup_steps()
        stage.decode_steps = config.eval_decode_steps
        if data.has_evaluation():
            stage.hold_gap_db = config.latent_hold_gap_db
        return stage

    @staticmethod
    def check(config, autoencoder_config: AutoencoderConfig) -> None:
        check_clip_shapes(config, autoencoder_config)

    def hold_steps(self, step: int) -> int:
        """The hold's length as known at `step`: latent_hold_steps, or, while the gap has not
        released it, longer than `step`."""
        hold = self.latent_warmup_steps[0]
        if self.hold_gap_db is None or hold == 0:  # hold 0: no hold at all
            return hold
        return self.hold_released_at if self.hold_released_at is not None else max(hold, step + 1)

    def set_step(self, step: int) -> None:
        self.warmup = latent_warmup(self.hold_steps(step), self.latent_warmup_steps[1], step)

    def observe(self, evaluations: dict, step: int) -> None:
        """The first evaluation whose latent gap (every bucket's) reaches `hold_gap_db` releases
        the hold, at latent_hold_steps at the earliest."""
        gaps = [v for k, v in evaluations.items() if k.endswith("eval_latent_gap_db")]
        if self.hold_gap_db is None or self.hold_released_at is not None or not gaps:
            return
        if min(gaps) >= self.hold_gap_db:
            self.hold_released_at = max(self.latent_warmup_steps[0], step)

    def run_state(self) -> dict:
        return {"latent_hold_released_at": self.hold_released_at}

    def load_run_state(self, state: dict) -> None:
        self.hold_released_at = state.get("latent_hold_released_at")

    def forward(self, video, labels, draws: TrainingDraws | None = None):
        out = self.network.stage1_loss(video, self.warmup)
        names = ("prior_nats", "decoder_nats", "read_nats", "bits_per_pixel", "bits_per_latent_dim")
        return out["loss"], {**{k: out[k] for k in names}, "latent_warmup": self.warmup}

    @torch.no_grad()
    def evaluate(self, ema_network, video, labels) -> dict:
        """Reconstruction PSNR through the decoder sampler with each clip's own latent and with
        another clip's, and bits/pixel, on a fixed batch; "videos": the clips and their
        reconstructions, for the trackers."""
        from ..evaluate.reconstruction import reconstruction_metrics

        metrics = reconstruction_metrics(ema_network, video, self.decode_steps)
        own = float(metrics["psnr"].mean(1).mean())  # per-video means, as psnr_swapped is
        swapped = float(metrics["psnr_swapped"].mean())
        return {
            "eval_psnr": own,
            "eval_psnr_swapped": swapped,
            "eval_latent_gap_db": own - swapped,
            "eval_bits_per_pixel": metrics["bits_per_pixel"],
            "videos": {"real": video, "reconstruction": metrics["recon"]},
        }

    def evaluation_warning(self, evaluation: dict, step: int) -> str | None:
        """While the gap holds the latent warm-up beyond latent_hold_steps, one line saying so;
        after the warm-ups, `latent_gap_warning`."""
        hold, ramp = self.hold_steps(step), self.latent_warmup_steps[1]
        if step >= hold:
            return latent_gap_warning(evaluation, step) if step > hold + ramp else None
        if step < self.latent_warmup_steps[0]:
            return None
        return (
            f"the latent warm-up still holds at step {step}: decoding with another clip's latent "
            f"costs {evaluation['eval_latent_gap_db']:.2f} dB < latent_hold_gap_db "
            f"{self.hold_gap_db:g}, so the decoder does not read the latent yet; it ramps to plain "
            "UL from the first evaluation that reaches it"
        )

    def training_flops(self, frames: int, height: int, width: int) -> float:
        """Training FLOPs per example (ulvideo.models.flops): encoder, prior and decoder."""
        config = self.autoencoder_config
        return training_flops_per_example(config, "stage1", frames, height, width)

    def export(self, ema_network, directory, final: bool = False) -> None:
        """The export, with the latent scale of the EMA encoder on the reference clips."""
        if self.reference_videos is not None:
            scale = measure_latent_scale(ema_network, self.reference_videos)
            ema_network.config = dataclasses.replace(ema_network.config, latent_scale=scale)
        Pipeline(ema_network).save_pretrained(directory)


def latent_gap_warning(evaluation: dict, step: int) -> str | None:
    """One line when the decoder barely uses the latent (a collapsed stage 1), else None."""
    gap = evaluation["eval_latent_gap_db"]
    if gap >= MIN_LATENT_GAP_DB:
        return None
    return (
        f"warning: the latent is not used: at step {step} decoding with another clip's latent "
        f"costs only {gap:.2f} dB of PSNR (< {MIN_LATENT_GAP_DB} dB) at "
        f"{evaluation['eval_bits_per_pixel']:.4f} bits/pixel; raise the loss factor or the "
        "decoder bias (ulvideo rd sweeps them) before spending a stage-2 run on these latents"
    )


class Stage2(Stage):
    """UL stage 2: a base model on latents of the frozen stage-1 encoder, sigmoid-weighted loss.

    Of the stage-1 model it keeps only the encoder, and none when it trains from latent shards
    (`keep_encoder=False`); its checkpoints refer to the stage-1 export by fingerprint, and only
    the final export copies the autoencoder in (UL §5: only the encoder is needed to train).
    The latents' scale is the stage-1 export's (ulvideo.latent_scale), unless `config.model`
    gives `latent_scale`.
    """

    options = Stage2Options

    def __init__(self, config, ul: UnifiedLatents, num_classes: int, keep_encoder: bool = True):
        super().__init__()
        model = dict(config.model)
        if "latent_scale" not in model:
            model["latent_scale"] = stage1_latent_scale(ul.config, config.stage1_checkpoint)
        base_config = base_preset(
            config.base_preset,
            **model,
            latent_channels=ul.config.latent_channels,
            num_classes=num_classes if config.class_conditional else 0,
        )
        self.network = build_base(base_config)
        self.base_config = base_config
        self.scaling = LatentScaling.of(base_config.latent_scale, ul.config.regularizer)
        # UL_METHOD §5: training draws of lambda centred where the latents' SNR is 1
        self.schedule = ShiftedCosine(
            self.scaling.logsnr_shift, ul.config.logsnr_latent, ul.config.logsnr_min_latent
        )
        self.context_latent_frames = context_latent_frames(config, ul.config)
        self.context_prob = config.context_prob
        self.label_dropout = config.label_dropout
        self.autoencoder_config = ul.config
        self.stage1_export = config.stage1_checkpoint
        # a list hides the frozen encoder from DDP and save_state
        self.frozen_encoder = [ul.encoder.eval().requires_grad_(False)] if keep_encoder else []

    @staticmethod
    def autoencoder_config_of(config) -> AutoencoderConfig:
        """The stage-1 export's autoencoder config (its weights are read by `for_run`)."""
        path = autoencoder_export(config.stage1_checkpoint) / AUTOENCODER
        return read_config(path, AUTOENCODER, AutoencoderConfig)

    @classmethod
    def for_run(cls, config, data) -> "Stage2":
        ul = load_stage1(config.stage1_checkpoint)
        if data.from_latents:
            data.dataset.check_encoder(ul)  # before the stage drops the encoder
        stage = cls(config, ul, data.num_classes, keep_encoder=not data.from_latents)
        if data.from_latents and PartialState().is_main_process:
            # shards have no evaluation split: their scale is checked here, once
            measured = latent_logsnr_shift(config.latents_dir, max_shards=1)
            warning = stage.scale_warning(measured - 2 * math.log(stage.scaling.multiplier))
            if warning:
                print(warning)
        return stage

    @staticmethod
    def check(config, autoencoder_config: AutoencoderConfig) -> None:
        check_clip_shapes(config, autoencoder_config)
        context_latent_frames(config, autoencoder_config)

    @torch.no_grad()
    def encode(self, video):
        """z_clean of pixel clips, by the frozen stage-1 encoder (moved to the clips' device)."""
        if not self.frozen_encoder:
            raise ValueError("this stage trains from latent shards and holds no encoder")
        check_video_shape(video.shape, self.autoencoder_config)
        return self.frozen_encoder[0].to(video.device)(video)

    def forward(self, z_clean, labels, draws: TrainingDraws):
        """The loss of this process's rows of a global batch; `draws` keys every random choice
        (context or not, t, noise, label dropout) to the examples, so a global batch gives the same
        loss on any number of processes. t is stratified over the global batch."""
        if z_clean.shape[0] != draws.rows:
            raise ValueError(f"draws for {draws.rows} rows, got a batch of {z_clean.shape[0]}")
        batch = draws.batch_generator()
        use_context = float(torch.rand((), generator=batch)) < self.context_prob
        rows = slice(draws.start, draws.start + draws.rows)
        t = stratified_t(draws.global_batch, generator=batch)[rows].to(z_clean.device)
        per_row = draws.rows_generator(z_clean.device)
        drop = per_row.rand(device=z_clean.device) < self.label_dropout
        eps = per_row.randn_like(z_clean)
        ctx = self.context_latent_frames if use_context else 0
        return self.loss(self.scaled(z_clean), labels, ctx, t, eps, drop)

    def scaled(self, z_clean):
        """The latents as the base model models them (LatentScaling)."""
        return z_clean * self.scaling.multiplier

    def loss(self, z_clean, labels, ctx: int, t, eps, drop):
        """The sigmoid-weighted base loss with `ctx` clean context latent frames, at log-SNR
        times `t`, noise `eps` and with the labels of the `drop` mask dropped."""
        labels = self._drop_labels(labels, drop)
        nats = base_loss(
            lambda z_t, logsnr: self.network(z_t, logsnr, labels=labels, context_frames=ctx),
            z_clean,
            self.schedule,
            bias=self.scaling.logsnr_shift,
            context_frames=ctx,
            t=t,
            eps=eps,
        )
        return nats.mean(), {"base_nats": nats.mean().detach(), "context": float(ctx)}

    def _drop_labels(self, labels, drop):
        if self.base_config.num_classes == 0:
            return None
        drop = drop | (labels < 0)  # unlabelled examples (a mixture's images) train unconditional
        return torch.where(drop, torch.full_like(labels, self.base_config.num_classes), labels)

    @torch.no_grad()
    def evaluate(self, ema_network, z_clean, labels) -> dict:
        z_clean = self.scaled(z_clean)
        gen = torch.Generator(device=z_clean.device).manual_seed(0)
        t = torch.rand(z_clean.shape[0], generator=gen, device=z_clean.device)
        eps = torch.randn(z_clean.shape, generator=gen, device=z_clean.device)
        labels = self._drop_labels(labels, torch.zeros_like(labels, dtype=torch.bool))
        nats = base_loss(
            lambda z_t, logsnr: ema_network(z_t, logsnr, labels=labels),
            z_clean,
            self.schedule,
            bias=self.scaling.logsnr_shift,
            t=t,
            eps=eps,
        )
        # latents of std s have SNR s^2 exp(lambda): it is 1 at lambda = 2 ln(1/s) = -ln(s^2)
        shift = -float(z_clean.double().var(unbiased=False).log())
        return {"eval_base_nats": float(nats.mean()), "eval_latent_logsnr_shift": shift}

    def evaluation_warning(self, evaluation: dict, step: int) -> str | None:
        """One line when the training draws of lambda centre far from where the latents' SNR is 1."""
        return self.scale_warning(evaluation["eval_latent_logsnr_shift"])

    def scale_warning(self, shift: float) -> str | None:
        """One line when the draws' centre is far from `shift`, where the SNR of the latents (as
        the base model sees them) is 1: the latent scale does not fit these latents."""
        centre = self.scaling.logsnr_shift
        if abs(shift - centre) <= MAX_SCHEDULE_SHIFT_ERROR:
            return None
        std = math.exp(-shift / 2) / self.scaling.multiplier
        return (
            f"warning: stage 2's latents have std {std:.3g}, but it uses latent_scale "
            f"{self.base_config.latent_scale:.3g} (1/std, the stage-1 export's unless given): "
            f"its draws of lambda centre on {centre:.2f}, not {shift:.2f}; set --model "
            f"'{{\"latent_scale\": {1 / std:.3g}}}' (UL_METHOD §5)"
        )

    def training_flops(self, frames: int, height: int, width: int) -> float:
        """Training FLOPs per example (ulvideo.models.flops) of the base model; the frozen
        encoder's forward pass (pixel data) is not counted."""
        return training_flops_per_example(
            self.autoencoder_config, "stage2", frames, height, width, self.base_config
        )

    def export(self, ema_network, directory, final: bool = False) -> None:
        """A checkpoint's export: base/ + a reference to stage 1; the final one: self-contained
        (with stage 1's distilled decoder, when it has one)."""
        if final:
            stage1 = Pipeline.from_pretrained(self.stage1_export)
            Pipeline(
                stage1.autoencoder, ema_network, self.base_config, stage1.student
            ).save_pretrained(directory)
        else:
            save_stage2_checkpoint(directory, ema_network, self.base_config, self.stage1_export)


STAGES = {1: Stage1, 2: Stage2}


def check_clip_shapes(config, autoencoder_config: AutoencoderConfig) -> None:
    """Every bucket's (or the clip's) frame count and size against the autoencoder."""
    for bucket in config.bucket_table():
        name = f"bucket {bucket.name}" if config.bucketed else "clip"
        check_video_shape((1, 3, *bucket.shape), autoencoder_config, name)


def stage1_latent_scale(autoencoder_config: AutoencoderConfig, export) -> float:
    """The latent scale the stage-1 export recorded, with the fix when it has none."""
    if autoencoder_config.latent_scale is None:
        raise ValueError(
            f"the stage-1 export {export} records no latent scale (training measures it when it "
            "exports): give it with --model '{\"latent_scale\": S}', S = 1 / the std of its "
            "latents"
        )
    return autoencoder_config.latent_scale


def context_latent_frames(config, autoencoder_config: AutoencoderConfig) -> int:
    """The latent frames of `config.context_frames` pixel frames (1 + k x temporal_downsample)."""
    frames, step = config.context_frames, autoencoder_config.temporal_downsample
    if frames == 0:
        return 0
    if frames < 1 or (frames - 1) % step:
        below = 1 + max(0, (frames - 1) // step) * step
        raise ValueError(
            f"context_frames={frames}: the causal encoder takes 1 + {step}k pixel frames; use "
            f"{below} or {below + step}"
        )
    return latent_grid(frames, 1, 1, step, 1)[0]


def load_stage1(path) -> UnifiedLatents:
    """The frozen stage-1 model, with a clear error for a missing or incompatible checkpoint."""
    try:
        return load_autoencoder(path)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise ValueError(f"cannot load the stage-1 checkpoint {path}: {err}") from err

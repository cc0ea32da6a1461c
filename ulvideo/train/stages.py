"""What each stage trains: the module handed to accelerate, its loss, its evaluation and export.

The trainer knows stages, not networks: a stage exposes `network` (what the EMA tracks and the
export writes), `forward(batch) -> (loss, logs)` as an nn.Module so DDP/FSDP wrap it, `evaluate`,
`evaluation_warning` (one line the trainer prints when an evaluation shows a wasted run) and
`export`. Stage 2's forward also takes the batch's `TrainingDraws` (per-example randomness);
stage 1's noise is drawn inside `UnifiedLatents.stage1_loss`, from each process's RNG.
"""

import math

import torch
from torch import nn

from ..diffusion import ShiftedCosine, base_loss, stratified_t
from ..diffusion.noise import TrainingDraws
from ..models import base_preset, build_base, check_video_shape, training_flops_per_example
from ..pipeline import Pipeline, load_autoencoder, save_stage2_checkpoint
from ..ul import UnifiedLatents
from .latents import latent_logsnr_shift

MIN_LATENT_GAP_DB = 1.0  # below this swapped-latent PSNR gap, stage 1 has collapsed
# beyond this distance from 2 ln(1/std) of the latents, stage 2's training draws miss their signal
MAX_SCHEDULE_SHIFT_ERROR = 1.5


class Stage1(nn.Module):
    """UL stage 1: encoder, prior and decoder trained jointly on L_z + L_x."""

    def __init__(self, model_config):
        super().__init__()
        self.network = UnifiedLatents(model_config)
        self.autoencoder_config = model_config
        self.warmup = 0.0  # the trainer's latent warm-up sets it before every step

    def forward(self, video, labels):
        out = self.network.stage1_loss(video, self.warmup)
        names = ("prior_nats", "decoder_nats", "read_nats", "bits_per_pixel", "bits_per_latent_dim")
        return out["loss"], {**{k: out[k] for k in names}, "latent_warmup": self.warmup}

    @torch.no_grad()
    def evaluate(self, ema_network, video, labels, decode_steps: int) -> dict:
        """Reconstruction PSNR through the decoder sampler with each clip's own latent and with
        another clip's, and bits/pixel, on a fixed batch; "videos": the clips and their
        reconstructions, for the trackers."""
        from ..evaluate.reconstruction import reconstruction_metrics

        metrics = reconstruction_metrics(ema_network, video, decode_steps)
        own = float(metrics["psnr"].mean(1).mean())  # per-video means, as psnr_swapped is
        swapped = float(metrics["psnr_swapped"].mean())
        return {
            "eval_psnr": own,
            "eval_psnr_swapped": swapped,
            "eval_latent_gap_db": own - swapped,
            "eval_bits_per_pixel": metrics["bits_per_pixel"],
            "videos": {"real": video, "reconstruction": metrics["recon"]},
        }

    @staticmethod
    def evaluation_warning(evaluation: dict, step: int) -> str | None:
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

    def training_flops(self, frames: int, height: int, width: int) -> float:
        """Training FLOPs per example (ulvideo.models.flops): encoder, prior and decoder."""
        config = self.autoencoder_config
        return training_flops_per_example(config, "stage1", frames, height, width)

    def export(self, ema_network, directory, final: bool = False) -> None:
        Pipeline(ema_network).save_pretrained(directory)


class Stage2(nn.Module):
    """UL stage 2: a base model on latents of the frozen stage-1 encoder, sigmoid-weighted loss.

    Of the stage-1 model it keeps only the encoder, and none when it trains from latent shards
    (`keep_encoder=False`); its checkpoints refer to the stage-1 export by fingerprint, and only
    the final export copies the autoencoder in (UL §5: only the encoder is needed to train).
    """

    def __init__(
        self,
        config,
        ul: UnifiedLatents,
        num_classes: int,
        keep_encoder: bool = True,
        latent_scale: float | None = None,
    ):
        super().__init__()
        scale = {} if latent_scale is None else {"latent_scale": latent_scale}
        base_config = base_preset(
            config.base_preset,
            **{**config.model, **scale},
            latent_channels=ul.config.latent_channels,
            num_classes=num_classes if config.class_conditional else 0,
        )
        if ul.config.regularizer == "ul" and base_config.latent_scale != 1.0:
            raise ValueError(
                f"latent_scale {base_config.latent_scale} is for KL latents; UL's are noised at a "
                "fixed lambda = 5: leave it at 1 and set schedule_shift and bias (UL_METHOD §5)"
            )
        self.network = build_base(base_config)
        self.base_config = base_config
        # [ours] UL_METHOD §5: training draws of lambda centred on schedule_shift
        self.schedule = ShiftedCosine.with_shift(
            base_config.schedule_shift, ul.config.logsnr_latent, ul.config.logsnr_min_latent
        )
        self.bias = base_config.bias
        self.context_frames = config.context_frames
        self.context_prob = config.context_prob
        self.label_dropout = config.label_dropout
        self.autoencoder_config = ul.config
        self.stage1_export = config.stage1_checkpoint
        # a list hides the frozen encoder from DDP and save_state
        self.frozen_encoder = [ul.encoder.eval().requires_grad_(False)] if keep_encoder else []

    def move_encoder(self, device) -> None:
        for encoder in self.frozen_encoder:
            encoder.to(device)

    @torch.no_grad()
    def encode(self, video):
        """z_clean of pixel clips, by the frozen stage-1 encoder."""
        if not self.frozen_encoder:
            raise ValueError("this stage trains from latent shards and holds no encoder")
        check_video_shape(video.shape, self.autoencoder_config)
        return self.frozen_encoder[0](video)

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
        ctx = self.context_frames if self.context_frames > 0 and use_context else 0
        return self.loss(self.scaled(z_clean), labels, ctx, t=t, eps=eps, drop=drop)

    def scaled(self, z_clean):
        """The latents as the base model models them: z_clean x latent_scale (LDM)."""
        return z_clean * self.base_config.latent_scale

    def loss(self, z_clean, labels, ctx: int, t=None, eps=None, drop=None):
        """The sigmoid-weighted base loss with `ctx` clean context latent frames; t, eps and the
        label `drop` mask are drawn from torch's RNG where not given."""
        labels = self._drop_labels(labels, drop)
        nats = base_loss(
            lambda z_t, logsnr: self.network(z_t, logsnr, labels=labels, context_frames=ctx),
            z_clean,
            self.schedule,
            bias=self.bias,
            context_frames=ctx,
            t=t,
            eps=eps,
        )
        return nats.mean(), {"base_nats": nats.mean().detach(), "context": float(ctx)}

    def _drop_labels(self, labels, drop=None):
        if self.base_config.num_classes == 0:
            return None
        if drop is None:
            drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
        drop = drop | (
            labels < 0
        )  # unlabelled examples (a mixture's image sources) train unconditional
        return torch.where(drop, torch.full_like(labels, self.base_config.num_classes), labels)

    @torch.no_grad()
    def evaluate(self, ema_network, z_clean, labels, decode_steps: int) -> dict:
        z_clean = self.scaled(z_clean)
        gen = torch.Generator(device=z_clean.device).manual_seed(0)
        t = torch.rand(z_clean.shape[0], generator=gen, device=z_clean.device)
        eps = torch.randn(z_clean.shape, generator=gen, device=z_clean.device)
        labels = self._drop_labels(labels, torch.zeros_like(labels, dtype=torch.bool))
        nats = base_loss(
            lambda z_t, logsnr: ema_network(z_t, logsnr, labels=labels),
            z_clean,
            self.schedule,
            bias=self.bias,
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
        """One line when `schedule_shift` is far from `shift`, where the SNR of the latents (as
        the base model sees them, scaled) is 1."""
        centre = self.base_config.schedule_shift
        if abs(shift - centre) <= MAX_SCHEDULE_SHIFT_ERROR:
            return None
        return (
            f"warning: the latents have std {math.exp(-shift / 2):.3g}, so their SNR is 1 at "
            f"lambda {shift:.2f}, but stage 2 draws lambda around schedule_shift {centre:g}; set "
            f'--model \'{{"schedule_shift": {shift:.1f}, "bias": {shift:.1f}}}\' (UL_METHOD §5)'
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


def measure_latent_scale(data, ul: UnifiedLatents, examples: int = 256) -> float:
    """1 / the std of the training latents (LDM's scaling_factor): of the latent shards' first
    shard, or of the first `examples` clips encoded by `ul`."""
    if data.from_latents:
        return math.exp(latent_logsnr_shift(data.dataset.directory, max_shards=1) / 2)
    count = min(examples, len(data.dataset))
    clips = torch.stack([data.dataset[i][0] for i in range(count)])
    with torch.no_grad():
        z = torch.cat([ul.encode(batch) for batch in clips.split(16)])
    return 1.0 / float(z.double().std(unbiased=False))


def load_stage1(path) -> UnifiedLatents:
    """The frozen stage-1 model, with a clear error for a missing or incompatible checkpoint."""
    try:
        ul = load_autoencoder(path)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise ValueError(f"cannot load the stage-1 checkpoint {path}: {err}") from err
    return ul

"""UnifiedLatents: encoder + prior + decoder tied by the UL losses (UL_METHOD §2-§4, §6).

Saving and loading belong to ulvideo.pipeline (through ulvideo.serialization).
"""

from functools import partial

import torch
from torch import Tensor, nn

from .diffusion import (
    LinearLogSNR,
    ShiftedCosine,
    StackedRandomGenerator,
    bits_per_latent_dim,
    bits_per_pixel,
    decode_windows,
    decoder_terms,
    diffuse,
    encode_chunks,
    gaussian_kl,
    get_sampler,
    latent_chunks,
    logsnr_grid,
    prior_elbo,
    randn_frames,
    randn_like,
    sample_windows,
    stratified_t,
    to_data,
)
from .models import (
    AutoencoderConfig,
    Decoder,
    Encoder,
    build_prior,
    check_video_shape,
    latent_shape,
)

# LDM's clamp of the KL encoder's log-variance (Rombach et al. 2022, DiagonalGaussianDistribution)
LOGVAR_RANGE = (-30.0, 20.0)


class UnifiedLatents(nn.Module):
    """The stage-1 model. The encoder is deterministic; its latent is noised to lambda = 5 (z0),
    the prior measures its bitrate with an unweighted ELBO, and the decoder is a diffusion model
    in pixel space conditioned on z0.

    With `config.regularizer == "kl"` it is instead the KL-regularised (Stable-Diffusion style)
    autoencoder on the same networks, for comparison: the encoder predicts a Gaussian posterior,
    the decoder is trained on a sample of it, the rate is KL(q(z|x) || N(0, I)) and there is no
    prior. At sampling time the decoder takes the posterior mean (as LDM decodes the mode) or a
    stage-2 model's clean latent.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.prior = build_prior(config) if config.regularizer == "ul" else None
        self.decoder = Decoder(config)
        self.latent_schedule = LinearLogSNR(config.logsnr_latent, config.logsnr_min_latent)
        self.pixel_schedule = ShiftedCosine.for_resolution(config.resolution)

    def validate_video(self, video: Tensor) -> None:
        """Raise a clear error for a wrong type, rank, channel count, frame count or size."""
        if not isinstance(video, Tensor) or not video.is_floating_point():
            raise TypeError(
                f"video must be a float tensor in [-1, 1], got {getattr(video, 'dtype', type(video))}"
            )
        check_video_shape(video.shape, self.config)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C_z, T_z, H_z, W_z) of a frames x height x width clip."""
        check_video_shape((1, self.config.in_channels, frames, height, width), self.config, "clip")
        return latent_shape(self.config, frames, height, width)

    def pixel_shape(self, latent_frames: int, latent_height: int, latent_width: int):
        """(C, T, H, W) of the clip whose latent grid is latent_frames x latent_height x latent_width."""
        config = self.config
        return (
            config.in_channels,
            1 + (latent_frames - 1) * config.temporal_downsample,
            latent_height * config.spatial_downsample,
            latent_width * config.spatial_downsample,
        )

    def encode(self, video: Tensor, window: int | None = None) -> Tensor:
        """z_clean = E(video), deterministic.

        With `window` (1 + 4k pixel frames, k >= 1, as decode's) the causal encoder streams over
        chunks: the first `window` frames, then 4k at a time (each latent frame of the clip is
        made once), and gives the same latents with activation memory bounded by the window.
        """
        return self._moments(video, window)[:, : self.config.latent_channels]

    def posterior(self, video: Tensor, window: int | None = None) -> tuple[Tensor, Tensor]:
        """The KL arm's q(z | video): its mean (= encode) and log-variance, clamped as LDM's."""
        if self.config.regularizer != "kl":
            raise ValueError("posterior is the KL arm's: this model's regularizer is 'ul'")
        return _gaussian(self._moments(video, window))

    def _moments(self, video: Tensor, window: int | None) -> Tensor:
        self.validate_video(video)
        if window is None:
            return self.encoder.moments(video)
        chunks = encode_chunks(video.shape[2], window, self.config.temporal_downsample)
        chunks = (video[:, :, frames] for frames in chunks)
        return torch.cat(list(self.encoder.stream(chunks, moments=True)), dim=2)

    def noisy_latent(self, z_clean: Tensor, rng: StackedRandomGenerator | None = None) -> Tensor:
        """The latent the decoder is conditioned on at sampling time: UL's z0, or for the KL arm
        z_clean itself (the posterior mean, or a stage-2 model's clean latent)."""
        if self.config.regularizer == "kl":
            return z_clean
        # UL §2: z0 = alpha_0 z_clean + sigma_0 eps at the fixed log-SNR lambda_z(0) = 5
        eps = randn_like(z_clean, rng)
        logsnr = torch.full((z_clean.shape[0],), self.config.logsnr_latent, device=z_clean.device)
        return diffuse(z_clean, logsnr.to(z_clean.dtype), eps)

    def rate(
        self,
        z_clean: Tensor,
        window: int | None = None,
        *,
        t: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """The latent bitrate L_z in nats per example: the prior's unweighted ELBO (UL eq. 3),
        one Monte-Carlo draw of t (per example) and noise, drawn unless given (eps: z_clean's
        shape).

        With `window` (pixel frames, 1 + 4k, as encode's and decode's) the latent frames are cut
        into consecutive chunks of the window's latent frames, each coded by the prior as a clip
        of its own, and the chunks' nats are summed: the prior's memory is bounded by the window.
        That is the rate of a code that ignores what one chunk tells of the next. It equals the
        whole clip's where the prior is local in time (tested), and is otherwise the code length
        under the product of the chunks' priors, which a prior that reads across chunks can beat.
        """
        if self.prior is None:
            raise ValueError("the KL arm has no prior: its rate is kl_rate(video)")
        if window is None:
            return prior_elbo(self.prior, z_clean, self.latent_schedule, t=t, eps=eps)
        chunks = latent_chunks(z_clean.shape[2], window, self.config.temporal_downsample)
        t = stratified_t(z_clean.shape[0], device=z_clean.device) if t is None else t
        return sum(
            prior_elbo(
                self.prior,
                z_clean[:, :, chunk],
                self.latent_schedule,
                t=t,
                eps=None if eps is None else eps[:, :, chunk],
            )
            for chunk in chunks
        )

    def kl_rate(self, video: Tensor, window: int | None = None) -> Tensor:
        """The KL arm's rate in nats per example: KL(q(z | video) || N(0, I)), in closed form."""
        return gaussian_kl(*self.posterior(video, window))

    def stage1_loss(self, video: Tensor, warmup: float = 0.0) -> dict[str, Tensor]:
        """UL Algorithm 1: L = L_z (prior ELBO, w = 1) + L_x (sigmoid-weighted decoder loss).

        `warmup` in [0, 1] is the stage-1 latent warm-up (docs/STAGE1_DIAGNOSTICS.md); 0 is plain
        UL. It scales the gradient that L_z sends into the encoder by 1 - warmup (the value of L_z
        and the prior's own gradient are unchanged), and adds warmup * L_read, the decoder term
        that teaches the decoder to read z0 before the rate can remove it. Returns `loss` (mean
        over the batch, differentiable) and the detached batch means `prior_nats` (the rate L_z;
        the KL arm's: its KL), `decoder_nats` (L_x), `read_nats`, `bits_per_pixel`,
        `bits_per_latent_dim`.

        The KL arm's loss is kl_weight x KL(q(z|x) || N(0, I)) + L_x, the decoder conditioned on
        z = mean + std * eps (the reparameterised sample); the warm-up acts on the KL's gradient
        into the encoder as on L_z's.
        """
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"warmup must be in [0, 1] (0 is plain UL), got {warmup}")
        # losses in the data's precision (autocast)
        moments = self._moments(video, None).to(video.dtype)
        kept = moments.detach() + (1.0 - warmup) * (moments - moments.detach())  # same value
        if self.config.regularizer == "kl":
            mean, logvar = _gaussian(moments)
            z_clean = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
            # the closed-form KL of a diagonal Gaussian to N(0, I) (Kingma & Welling 2014, app. B)
            prior_nats = gaussian_kl(*_gaussian(kept))
            rate_term = self.config.kl_weight * prior_nats
        else:
            z_clean = moments
            prior_nats = rate_term = self.rate(kept)
        decoder_nats, read_nats = decoder_terms(
            self.decoder,
            video,
            self.noisy_latent(z_clean),
            self.pixel_schedule,
            loss_factor=self.config.loss_factor,
            bias=self.config.decoder_bias,
        )
        loss = rate_term + decoder_nats
        if warmup > 0:
            loss = loss + warmup * read_nats
        _, _, frames, height, width = video.shape
        prior_mean = prior_nats.detach().mean()
        return {
            "loss": loss.mean(),
            "prior_nats": prior_mean,
            "decoder_nats": decoder_nats.detach().mean(),
            "read_nats": read_nats.detach().mean(),
            "bits_per_pixel": bits_per_pixel(prior_mean, frames, height, width),
            "bits_per_latent_dim": bits_per_latent_dim(prior_mean, z_clean[0].numel()),
        }

    @torch.no_grad()
    def decode(
        self,
        z0: Tensor,
        steps: int = 32,
        method: str = "ddpm",
        rng: StackedRandomGenerator | None = None,
        progress: bool = False,
        window: int | None = None,
        overlap: int | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        student=None,
        *,
        grid: str = "t",
    ) -> Tensor:
        """Sample x ~ p(x | z0) by reverse diffusion in log-SNR space (UL Algorithm 2, steps 3-4)
        with the sampler `method` (ulvideo.diffusion.METHODS) on a `grid` (GRIDS) of `steps` steps.

        `rng` (one generator per video) makes video k depend only on its own seed; None draws from
        torch's global RNG, frame by frame (randn_frames). Returns a video in [-1, 1];
        predictions are clipped to [-1, 1] at every step. The decoder runs in eval mode (no
        dropout) and is put back in its previous mode afterwards.

        `window` (pixel frames, 1 + 4k) and `tile` (pixels, a multiple of spatial_downsample) run
        the decoder on overlapping windows / tiles of that size, blended inside every step
        (ulvideo.diffusion.windows: decode_windows, sample_windows); `overlap` and `tile_overlap`
        default to the fewest frames / pixels that are at least half of them. Beyond the output,
        memory is that of one window's frames.

        `student` (ulvideo.student.Student) decodes with the distilled decoder instead, by DDIM
        on its own grid (`method` does not apply).
        """
        if z0.ndim != 5 or z0.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"z0 must be B x {self.config.latent_channels} x T_z x H_z x W_z, got {tuple(z0.shape)}"
            )
        get_sampler(method)  # clear errors before any work
        shape = (z0.shape[0], *self.pixel_shape(*z0.shape[2:]))
        noise_sampler = partial(randn_like, rng=rng)
        # one window of weight 1 by default: exactly the plain decoder
        latents, windows = zip(
            *decode_windows(
                z0.shape[2:],
                self.config.temporal_downsample,
                self.config.spatial_downsample,
                window=window,
                overlap=overlap,
                tile=tile,
                tile_overlap=tile_overlap,
            )
        )

        network, log_snrs = self.decoder, to_data(logsnr_grid(self.pixel_schedule, steps, grid))
        if student is not None:  # progressive distillation trains DDIM steps on its grid
            network, log_snrs, method = student.network, student.sampling_grid(steps), "ddim"

        def window_denoiser(x_t: Tensor, logsnr: Tensor, k: int) -> Tensor:
            return network(x_t, z0[(..., *latents[k])], logsnr).clamp(-1, 1)

        was_training = network.training
        network.eval()
        try:
            video = sample_windows(
                method,
                window_denoiser,
                list(windows),
                randn_frames(z0.new_empty(shape), noise_sampler),
                log_snrs,  # ends at the pixels
                noise_sampler=noise_sampler,
                progress=progress,
            )
        finally:
            network.train(was_training)
        return video.clamp_(-1, 1)

    @torch.no_grad()
    def reconstruct(
        self,
        video: Tensor,
        steps: int = 32,
        method: str = "ddpm",
        rng: StackedRandomGenerator | None = None,
        window: int | None = None,
        tile: int | None = None,
        student=None,
        *,
        grid: str = "t",
    ) -> Tensor:
        """encode -> noisy_latent -> decode, streamed / in windows of `window` frames when given
        (see encode, decode; `tile`, `student` and `grid` as decode's)."""
        z_clean = self.encode(video, window)
        return self.reconstruct_from(
            z_clean, steps, method, rng, window=window, tile=tile, student=student, grid=grid
        )

    def reconstruct_from(
        self,
        z_clean: Tensor,
        steps: int = 32,
        method: str = "ddpm",
        rng: StackedRandomGenerator | None = None,
        **decode_options,
    ) -> Tensor:
        """reconstruct past the encoder: noisy_latent -> decode, the latent noise and then the
        decoder's drawn from `rng`; `decode_options` (window, tile, student, grid) as decode's."""
        return self.decode(self.noisy_latent(z_clean, rng), steps, method, rng, **decode_options)


def _gaussian(moments: Tensor) -> tuple[Tensor, Tensor]:
    # the KL encoder's output as (mean, log-variance), the latter clamped as LDM's
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(*LOGVAR_RANGE)

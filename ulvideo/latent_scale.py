"""The scale of the stage-1 latents: measured once, recorded with the export, used one way.

As diffusers' `scaling_factor`: stage 1 measures `latent_scale` = 1 / the std of its clean latents
when it exports (on a fixed batch of clips, with the exported EMA encoder) and records it in the
export's AutoencoderConfig. Stage 2 copies it into its BaseConfig (unless given there) and applies
it through `LatentScaling`, the one place that decides what the scale changes:

- UL latents keep their scale, because their noise is fixed at lambda = 5 (UL §2): stage 2's draws
  of lambda and the bias of its loss weight sigmoid(b - lambda) both move to 2 ln(latent_scale),
  where the latents' SNR is 1 (UL_METHOD §5);
- KL latents are multiplied by it to unit variance (LDM), and the draws and the bias stay at 0.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@torch.no_grad()
def measure_latent_scale(autoencoder: nn.Module, videos: Tensor, batch_size: int = 8) -> float:
    """1 / the std of `autoencoder.encode(videos)` (the clean latents), encoded in eval mode on
    the autoencoder's device, `batch_size` clips at a time."""
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    try:
        z = torch.cat([autoencoder.encode(v.to(device)).double() for v in videos.split(batch_size)])
    finally:
        autoencoder.train(was_training)
    return 1.0 / float(z.std(unbiased=False))


@dataclass(frozen=True)
class LatentScaling:
    """How stage 2 sees latents of scale `latent_scale`: it models `z_clean * multiplier`, centres
    its draws of lambda on `logsnr_shift` and uses it as the bias of its loss weight."""

    multiplier: float
    logsnr_shift: float

    @classmethod
    def of(cls, latent_scale: float, regularizer: str) -> "LatentScaling":
        if regularizer == "kl":  # LDM: unit-variance latents
            return cls(multiplier=latent_scale, logsnr_shift=0.0)
        # std s has SNR s^2 exp(lambda), which is 1 at lambda = 2 ln(1/s) (UL_METHOD §5)
        return cls(multiplier=1.0, logsnr_shift=2.0 * math.log(latent_scale))

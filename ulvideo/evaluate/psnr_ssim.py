"""Reconstruction metrics of two video batches: PSNR and SSIM, per frame or per video.

ulvideo.evaluate.reconstruction scores a stage-1 model with them (`ulvideo eval reconstruction`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

DATA_RANGE = 2.0  # videos live in [-1, 1]


def check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 5:
        raise ValueError(
            "expected two video batches B x C x T x H x W of one shape, got "
            f"{list(x.shape)} and {list(y.shape)}"
        )


def per_video(frame_values: Tensor, per: str) -> Tensor:
    """`B x T` per-frame values, or their mean over frames per video (`per="video"`)."""
    if per not in ("frame", "video"):
        raise ValueError(f"per must be 'frame' or 'video', got {per!r}")
    return frame_values if per == "frame" else frame_values.mean(dim=1)


def psnr(x: Tensor, y: Tensor, per: str = "frame") -> Tensor:
    """PSNR in dB of `B x C x T x H x W` videos in [-1, 1]: `B x T`, or `B` averaged over frames."""
    # PSNR = 10 log10(range^2 / MSE), range 2 for [-1, 1]; identical frames give inf
    check_pair(x, y)
    mse = (x.double() - y.double()).square().mean(dim=(1, 3, 4))
    return per_video(10 * torch.log10(DATA_RANGE**2 / mse), per)


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> Tensor:
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (taps / sigma) ** 2)
    return window / window.sum()


def ssim(x: Tensor, y: Tensor, per: str = "frame") -> Tensor:
    """SSIM of `B x C x T x H x W` videos in [-1, 1]: `B x T`, or `B` averaged over frames.

    Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
    statistics, averaged over channels and the window-valid area: skimage's `structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)`.
    """
    check_pair(x, y)
    b, c, t, h, w = x.shape
    window = gaussian_window()
    if min(h, w) < len(window):
        raise ValueError(f"SSIM needs frames of at least {len(window)}x{len(window)}, got {h}x{w}")
    x, y = (v.double().transpose(1, 2).reshape(b * t, c, h, w) for v in (x, y))

    def blur(v: Tensor) -> Tensor:  # separable Gaussian filter, valid area only
        v = F.conv2d(v, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        return F.conv2d(v, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)

    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    # SSIM = (2 mx my + C1)(2 cxy + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2))
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return per_video(ssim_map.mean(dim=(1, 2, 3)).view(b, t), per)

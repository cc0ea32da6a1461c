"""3D convolutions with explicit time padding (causal or centred), and spatial (un)patching."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

StreamCache = dict[nn.Module, Tensor]  # each causal conv's not-yet-consumed input frames


class Conv3d(nn.Conv3d):
    """A 3D conv over (B, C, T, H, W) that keeps H, W (divided by the stride) and pads time itself.

    causal=True zero-pads the past side only (kernel - 1 frames), so output frame j sees input
    frames <= stride_t * j; with stride_t = 2 it maps 1 + 2m frames to 1 + m. causal=False pads
    both sides (centred, odd kernel), which maps 1 + 2m frames to 1 + m as well.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: tuple[int, int] = (1, 1),
        causal: bool = True,
    ):
        stride_t, stride_s = stride
        half = kernel // 2
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            stride=(stride_t, stride_s, stride_s),
            padding=(0 if causal else half, half, half),
        )
        self.causal_pad = kernel - 1 if causal else 0

    def forward(self, x: Tensor, cache: StreamCache | None = None) -> Tensor:
        if not self.causal_pad:
            return super().forward(x)
        if cache is None:
            return super().forward(F.pad(x, (0, 0, 0, 0, self.causal_pad, 0)))  # past side only
        # Padded input P = [0] * causal_pad + frames; output j reads P[s j : s j + kernel]. The
        # cache holds P from the first output not yet produced on (a copy: a view would keep the
        # whole chunk alive until the next one).
        past = cache.get(self)
        if past is None:
            past = x.new_zeros(*x.shape[:2], self.causal_pad, *x.shape[3:])
        x = torch.cat([past, x], dim=2)
        stride, kernel = self.stride[0], self.kernel_size[0]
        outputs = (x.shape[2] - kernel) // stride + 1  # the caller's chunks complete >= 1
        cache[self] = x[:, :, stride * outputs :].clone()
        return super().forward(x)


def patchify(x: Tensor, p: int) -> Tensor:
    # Space-to-depth: (B, C, T, H, W) -> (B, C*p*p, T, H/p, W/p)
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    # Depth-to-space, the inverse of patchify
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.reshape(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c, t, h * p, w * p)

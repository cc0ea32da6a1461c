"""3D convolutions with explicit time padding (causal or centred), and spatial (un)patching."""

import torch.nn.functional as F
from torch import Tensor, nn


class Conv3d(nn.Conv3d):
    """A 3D conv over (B, C, T, H, W) that keeps H, W (divided by the stride) and pads time itself.

    causal=True pads the past side only (kernel_t - 1 frames), so output frame j sees input frames
    <= stride_t * j; with stride_t = 2 it maps 1 + 2m frames to 1 + m. causal=False pads both sides
    (centred), which maps 1 + 2m frames to 1 + m as well.
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
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            stride=(stride_t, stride_s, stride_s),
            padding=(0, kernel // 2, kernel // 2),
        )
        pad_t = kernel - 1
        self.time_pad = (pad_t, 0) if causal else (pad_t // 2, pad_t - pad_t // 2)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (0, 0, 0, 0, *self.time_pad)))


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

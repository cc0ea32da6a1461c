"""The 3D residual block of the encoder and decoder, and the resampling layers between stages."""

import torch.nn.functional as F
from torch import Tensor, nn

from .conv import Conv3d, StreamCache
from .norm import GroupNorm3d


class ResBlock3d(nn.Module):
    """norm -> SiLU -> conv3 -> norm -> SiLU -> dropout -> conv3, plus a (1x1 projected) skip.

    With cond_dim > 0 the second norm is adaptive to a conditioning vector (the log-SNR embedding).
    causal=True keeps every output frame a function of current and past input frames only, and
    the block streams with a `cache` (see Conv3d).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int = 0,
        causal: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = GroupNorm3d(in_channels)
        self.conv1 = Conv3d(in_channels, out_channels, causal=causal)
        self.norm2 = GroupNorm3d(out_channels, cond_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv3d(out_channels, out_channels, causal=causal)
        self.skip = (
            nn.Conv3d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(
        self, x: Tensor, cond: Tensor | None = None, cache: StreamCache | None = None
    ) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(self.dropout(F.silu(self.norm2(h, cond))), cache)
        return self.skip(x) + h


class Downsample3d(nn.Module):
    """A strided 3x3x3 conv: H, W / `spatial`, and time 1 + 2m -> 1 + m when `temporal` == 2."""

    def __init__(
        self, in_channels: int, out_channels: int, spatial: int, temporal: int, causal: bool
    ):
        super().__init__()
        self.conv = Conv3d(in_channels, out_channels, stride=(temporal, spatial), causal=causal)

    def forward(self, x: Tensor, cache: StreamCache | None = None) -> Tensor:
        return self.conv(x, cache)


class Upsample3d(nn.Module):
    """The inverse of Downsample3d: nearest x`spatial` in space, time 1 + m -> 1 + 2m by linear
    interpolation that keeps frame j at position 2j, then a 3x3x3 conv."""

    def __init__(
        self, in_channels: int, out_channels: int, spatial: int, temporal: int, causal: bool
    ):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = Conv3d(in_channels, out_channels, causal=causal)

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal > 1:
            t, h, w = x.shape[2:]
            x = F.interpolate(
                x, size=(1 + (t - 1) * self.temporal, h, w), mode="trilinear", align_corners=True
            )
        if self.spatial > 1:
            x = F.interpolate(x, scale_factor=(1, self.spatial, self.spatial), mode="nearest")
        return self.conv(x)

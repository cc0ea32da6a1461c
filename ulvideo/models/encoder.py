"""The deterministic, causal spatiotemporal encoder E(x) -> z_clean (UL_METHOD §2, §7), and the
shape checks of the clips it takes."""

import math
from collections.abc import Iterable, Iterator

from torch import Tensor, nn

from ..geometry import latent_grid
from ..nn import Conv3d, Downsample3d, GroupNorm3d, ResBlock3d, StreamCache, patchify
from .presets import AutoencoderConfig


def valid_frame_counts(temporal_downsample: int, up_to: int = 21) -> list[int]:
    """The frame counts a causal encoder with this temporal stride accepts: 1 + k * stride."""
    return list(range(1, up_to + 1, temporal_downsample))


def nearest_frame_counts(frames: int, temporal_downsample: int) -> list[int]:
    """The valid counts 1 + k * stride next to `frames`: the one below and the one above."""
    below = 1 + max(0, frames - 1) // temporal_downsample * temporal_downsample
    return [below] if below == frames else [below, below + temporal_downsample]


def check_video_shape(
    shape: tuple[int, ...], config: AutoencoderConfig, name: str = "video"
) -> None:
    """Raise a ValueError naming the problem and the fix for a video the encoder cannot take."""
    if len(shape) != 5:
        raise ValueError(
            f"{name} must be B x C x T x H x W (an image is T=1: use x.unsqueeze(2)), got {tuple(shape)}"
        )
    _, c, t, h, w = shape
    if c != config.in_channels:
        raise ValueError(f"{name} has {c} channels, the model expects {config.in_channels} (RGB)")
    td, sd = config.temporal_downsample, config.spatial_downsample
    if (t - 1) % td:
        nearest = " or ".join(map(str, nearest_frame_counts(t, td)))
        raise ValueError(
            f"{name} has {t} frames; the causal encoder with {td}x temporal compression takes "
            f"1 + {td}k frames ({', '.join(map(str, valid_frame_counts(td)))}, ...): "
            f"use {nearest} frames"
        )
    if h % sd or w % sd:
        raise ValueError(
            f"{name} is {h}x{w}; height and width must be divisible by spatial_downsample={sd} "
            f"(crop or resize, e.g. to {h // sd * sd or sd}x{w // sd * sd or sd})"
        )


def latent_shape(
    config: AutoencoderConfig, frames: int, height: int, width: int
) -> tuple[int, int, int, int]:
    """(C_z, T_z, H_z, W_z): the latent of a frames x height x width clip under `config`."""
    grid = latent_grid(frames, height, width, config.temporal_downsample, config.spatial_downsample)
    return (config.latent_channels, *grid)


class Encoder(nn.Module):
    """2x2 patching, then causal residual stages with strided down convs, then a 1x1x1 head.

    Spatial 2x steps go in the first transitions, temporal 2x steps in the last ones. Every conv
    pads the past side only and every norm is per frame, so latent frame j depends only on
    pixel frames <= temporal_downsample * j: 1 + 4k frames give 1 + k latent frames, and an image
    is encoded exactly like the first frame of a video.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        ch = config.encoder_channels
        spatial_steps = int(math.log2(config.spatial_downsample)) - 1
        temporal_steps = int(math.log2(config.temporal_downsample))
        transitions = len(ch) - 1
        self.stem = Conv3d(4 * config.in_channels, ch[0])
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, (c, blocks) in enumerate(zip(ch, config.encoder_blocks)):
            self.stages.append(nn.Sequential(*(ResBlock3d(c, c) for _ in range(blocks))))
            if i < transitions:
                spatial = 2 if i < spatial_steps else 1
                temporal = 2 if i >= transitions - temporal_steps else 1
                self.downs.append(Downsample3d(c, ch[i + 1], spatial, temporal, causal=True))
        self.norm = GroupNorm3d(ch[-1])
        # the KL arm also predicts a log-variance: extra channels, so UL's weights are unchanged
        moments = 2 if config.regularizer == "kl" else 1
        self.head = nn.Conv3d(ch[-1], moments * config.latent_channels, 1)

    def moments(self, video: Tensor, cache: StreamCache | None = None) -> Tensor:
        """The head's output: z_clean (UL), or the posterior mean and log-variance stacked on
        the channels (KL); with a `cache`, `video` is the next chunk of a longer clip."""
        if cache is None:
            check_video_shape(video.shape, self.config)
        h = self.stem(patchify(video, 2), cache)
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h, cache=cache)
            if i < len(self.downs):
                h = self.downs[i](h, cache)
        return self.head(nn.functional.silu(self.norm(h)))

    def forward(self, video: Tensor, cache: StreamCache | None = None) -> Tensor:
        """z_clean of `video` (KL: the posterior mean); with a `cache`, `video` is the next chunk
        of a longer clip (stream)."""
        return self.moments(video, cache)[:, : self.config.latent_channels]

    def stream(self, chunks: Iterable[Tensor], moments: bool = False) -> Iterator[Tensor]:
        """The latents of a clip given as consecutive chunks, chunk by chunk: equal to forward on
        the whole clip, with activation memory bounded by the chunk. Each causal conv's past
        frames are carried from chunk to chunk. The first chunk has 1 + stride * k frames, the
        later ones stride * k (k >= 1), stride = temporal_downsample. `moments`: the head's
        whole output (Encoder.moments) instead."""
        cache: StreamCache = {}
        td = self.config.temporal_downsample
        for i, chunk in enumerate(chunks):
            if i == 0:
                check_video_shape(chunk.shape, self.config, "the first chunk")
            elif chunk.shape[2] == 0 or chunk.shape[2] % td:
                raise ValueError(
                    f"chunk {i} has {chunk.shape[2]} frames; every chunk after the first needs "
                    f"a positive multiple of temporal_downsample={td} frames"
                )
            yield self.moments(chunk, cache) if moments else self(chunk, cache)

"""The diffusion decoder x_hat = D(x_t, z0, logsnr): a 3D UViT in pixel space (UL_METHOD §4, §7).

2x2 patching, conv down stages, a transformer at the latent grid, conv up stages with skips, 2x2
unpatching. The noisy latent z0 enters twice: at the stem, repeated onto the patched pixel grid,
and in the transformer's tokens. Every residual block and transformer block is conditioned on the
log-SNR by adaptive normalisation.
"""

import math

import torch
from torch import Tensor, nn

from ..diffusion import v_to_x
from ..nn import (
    Conv3d,
    Downsample3d,
    GroupNorm3d,
    LogSNREmbedding,
    ResBlock3d,
    TransformerBlock,
    Upsample3d,
    patchify,
    run_blocks,
    sincos_3d,
    unpatchify,
)
from .encoder import check_video_shape, latent_shape
from .presets import AutoencoderConfig


class Decoder(nn.Module):
    """forward(x_t, z0, logsnr) -> x_hat, all videos B x C x T x H x W, z0 on the latent grid.

    Time is not causal here (centred convs): the decoder sees the whole latent clip. Spatial 2x
    steps beyond the conv levels are taken by patching the transformer's tokens.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        ch, width = config.decoder_channels, config.decoder_width
        levels = len(ch)
        temporal_steps = int(math.log2(config.temporal_downsample))
        # as the encoder: spatial 2x steps in the first levels, temporal ones in the last
        spatial_steps = min(levels - 1, int(math.log2(config.spatial_downsample)) - 1)
        self.token_patch = config.spatial_downsample // 2 ** (1 + spatial_steps)
        dropout, cond = config.decoder_dropout, width

        def res_blocks(c_in: int, c: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(
                ResBlock3d(c_in if i == 0 else c, c, cond, causal=False, dropout=dropout)
                for i in range(count)
            )

        self.logsnr_embed = LogSNREmbedding(cond)
        self.stem = Conv3d(4 * config.in_channels, ch[0], causal=False)
        self.latent_stem = Conv3d(config.latent_channels, ch[0], causal=False)
        self.down_blocks = nn.ModuleList(
            res_blocks(c, c, n) for c, n in zip(ch, config.decoder_blocks)
        )
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(levels - 1):
            spatial = 2 if i < spatial_steps else 1
            temporal = 2 if i >= levels - 1 - temporal_steps else 1
            self.downs.append(Downsample3d(ch[i], ch[i + 1], spatial, temporal, causal=False))
            self.ups.append(Upsample3d(ch[i + 1], ch[i], spatial, temporal, causal=False))
        self.up_blocks = nn.ModuleList(
            res_blocks(2 * c, c, n) for c, n in zip(ch, config.decoder_blocks)
        )
        token_dim = ch[-1] * self.token_patch**2
        self.to_tokens = nn.Linear(token_dim, width)
        self.latent_in = nn.Linear(config.latent_channels, width)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                width,
                width // config.head_dim,
                cond,
                config.decoder_attention,
                config.mlp_ratio,
                dropout,
            )
            for _ in range(config.decoder_depth)
        )
        self.from_tokens = nn.Linear(width, token_dim)
        self.norm_out = GroupNorm3d(ch[0])
        self.head = Conv3d(ch[0], 4 * config.in_channels, causal=False)
        self.checkpointing = False  # a runtime switch: ulvideo.nn.enable_activation_checkpointing

    def forward(self, x_t: Tensor, z0: Tensor, logsnr: Tensor) -> Tensor:
        self.check_inputs(x_t, z0, logsnr)
        cond = self.logsnr_embed(logsnr)
        # z0 at the input as well, as epsilon-VAE conditions its diffusion decoder (the latent
        # upsampled beside x_t): only the middle's z0 left the tiny decoder unable to draw shapes
        # at 32 px (docs/STAGE1_DIAGNOSTICS.md, "Shapes")
        h = self.stem(patchify(x_t, 2)) + self.latent_stem(self.latent_on_stem_grid(z0))
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, cond)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        h = self.middle(h, z0, cond)
        for i in reversed(range(len(self.up_blocks))):
            if i < len(self.ups):
                h = self.ups[i](h)
            h = torch.cat([h, skips[i]], dim=1)  # U-Net skip
            for block in self.up_blocks[i]:
                h = block(h, cond)
        v = unpatchify(self.head(nn.functional.silu(self.norm_out(h))), 2)
        return v_to_x(x_t, v, logsnr)

    def latent_on_stem_grid(self, z0: Tensor) -> Tensor:
        """z0 repeated onto the stem's grid (pixel frames, 2x2-patched space): pixel frame f takes
        latent frame ceil(f / td), the one the causal encoder made it part of (frame 0 alone)."""
        td, p = self.config.temporal_downsample, self.config.spatial_downsample // 2
        frames = 1 + (z0.shape[2] - 1) * td
        index = (torch.arange(frames, device=z0.device) + td - 1) // td
        z = z0.index_select(2, index)
        return z.repeat_interleave(p, dim=3).repeat_interleave(p, dim=4)

    def middle(self, h: Tensor, z0: Tensor, cond: Tensor) -> Tensor:
        # Transformer at the latent grid: conv features (patched to it) + projected z0 + positions
        p = self.token_patch
        tokens = self.to_tokens(patchify(h, p).permute(0, 2, 3, 4, 1))  # B T H W C
        tokens = tokens + self.latent_in(z0.permute(0, 2, 3, 4, 1))
        b, t, hh, ww, c = tokens.shape
        tokens = tokens + sincos_3d(t, hh, ww, c, device=h.device).to(h.dtype).view(t, hh, ww, c)
        tokens = run_blocks(self.blocks, tokens.reshape(b, t, hh * ww, c), cond, self.checkpointing)
        out = self.from_tokens(tokens.reshape(b, t, hh, ww, c)).permute(0, 4, 1, 2, 3)
        return unpatchify(out, p)

    def check_inputs(self, x_t: Tensor, z0: Tensor, logsnr: Tensor) -> None:
        """Raise a ValueError naming the problem for a noisy video / latent pair that do not match."""
        cfg = self.config
        check_video_shape(x_t.shape, cfg, name="x_t")
        b, _, t, h, w = x_t.shape
        expected = (b, *latent_shape(cfg, t, h, w))
        if tuple(z0.shape) != expected:
            raise ValueError(
                f"z0 has shape {tuple(z0.shape)}, but x_t {tuple(x_t.shape)} needs latents {expected}"
            )
        if logsnr.shape != (b,):
            raise ValueError(f"logsnr must have shape (B,) = ({b},), got {tuple(logsnr.shape)}")

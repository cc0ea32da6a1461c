"""The prior / base model: a (multi-level) AdaLN transformer over latent tokens (UL_METHOD §3, §5).

Level 0 runs at the latent grid (patch size 1 by default). Each further level merges 2x2 tokens
into one of the next width, runs its blocks, and splits back; the skip from the way down is added.
With widths [512, 1024] and depths [6, 16] this is the paper's two-level base ViT: 3 blocks at
width 512, 16 at width 1024 on a 2x coarser grid, then 3 at width 512.
"""

import torch
from torch import Tensor, nn

from ..diffusion import v_to_x
from ..nn import (
    LogSNREmbedding,
    TransformerBlock,
    modulate,
    modulation_linear,
    patchify,
    run_blocks,
    sincos_3d,
    unpatchify,
)
from .presets import AutoencoderConfig, BaseConfig
from .registry import register_network


def merge_tokens(x: Tensor) -> Tensor:
    # (B, T, H, W, C) -> (B, T, H/2, W/2, 4C): 2x2 neighbouring tokens concatenated
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // 2, w // 2, 4 * c)


def split_tokens(x: Tensor) -> Tensor:
    # The inverse of merge_tokens: (B, T, H, W, 4C) -> (B, T, 2H, 2W, C)
    b, t, h, w, c4 = x.shape
    x = x.reshape(b, t, h, w, 2, 2, c4 // 4).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, 2 * h, 2 * w, c4 // 4)


class VideoTransformer(nn.Module):
    """z_hat = F(z_t, logsnr, labels, context_frames): x-prediction from an internal v-prediction.

    labels: LongTensor (B,) in [0, num_classes]; the value num_classes is the learned null class
    (classifier-free guidance), also used when labels is None. context_frames: the first that many
    latent frames are given clean; their tokens get a learned "given" embedding.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        *,
        head_dim: int = 64,
        mode: str = "factorised",
        patch_size: int = 1,
        num_classes: int = 0,
        context: bool = False,
        dropout: float = 0.0,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.in_channels, self.patch_size, self.num_classes = in_channels, patch_size, num_classes
        self.checkpointing = False  # a runtime switch: ulvideo.nn.enable_activation_checkpointing
        cond_dim = widths[-1]
        self.logsnr_embed = LogSNREmbedding(cond_dim)
        self.class_embed = nn.Embedding(num_classes + 1, cond_dim) if num_classes else None
        self.given_embed = nn.Parameter(torch.zeros(widths[0])) if context else None
        self.patch_in = nn.Linear(in_channels * patch_size**2, widths[0])

        def blocks(width: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(width, width // head_dim, cond_dim, mode, mlp_ratio, dropout)
                for _ in range(count)
            )

        inner = len(widths) - 1
        self.down = nn.ModuleList(blocks(widths[i], depths[i] // 2) for i in range(inner))
        self.merge = nn.ModuleList(nn.Linear(4 * widths[i], widths[i + 1]) for i in range(inner))
        self.middle = blocks(widths[-1], depths[-1])
        self.split = nn.ModuleList(nn.Linear(widths[i + 1], 4 * widths[i]) for i in range(inner))
        self.up = nn.ModuleList(blocks(widths[i], depths[i] // 2) for i in range(inner))
        self.norm_out = nn.LayerNorm(widths[0], elementwise_affine=False, eps=1e-6)
        self.mod_out = modulation_linear(cond_dim, 2 * widths[0])
        self.patch_out = nn.Linear(widths[0], in_channels * patch_size**2)

    @property
    def grid_multiple(self) -> int:
        """Latent height and width must be multiples of this (patch size x 2 per extra level)."""
        return self.patch_size * 2 ** len(self.merge)

    def check_inputs(self, z_t: Tensor, logsnr: Tensor, labels: Tensor | None, context_frames: int):
        """Raise a ValueError naming the problem and the fix for inputs this model cannot take.
        Shapes and types only (no device sync): label values are checked where labels enter
        (ulvideo.sample.generate, the datasets)."""
        if z_t.ndim != 5 or z_t.shape[1] != self.in_channels:
            raise ValueError(
                f"z_t must be B x {self.in_channels} x T x H x W latents, got {tuple(z_t.shape)}"
            )
        m = self.grid_multiple
        if z_t.shape[3] % m or z_t.shape[4] % m:
            raise ValueError(
                f"latent grid {z_t.shape[3]}x{z_t.shape[4]} must be divisible by {m} "
                "(patch size x 2 per extra transformer level); use larger frames or fewer levels"
            )
        if logsnr.shape != (z_t.shape[0],):
            raise ValueError(
                f"logsnr must have shape (B,) = ({z_t.shape[0]},), got {tuple(logsnr.shape)}"
            )
        if labels is not None:
            if self.class_embed is None:
                raise ValueError("labels given to an unconditional model (num_classes=0)")
            if labels.shape != (z_t.shape[0],) or labels.dtype != torch.long:
                raise ValueError(
                    f"labels must be a LongTensor of shape (B,), got {labels.dtype} {tuple(labels.shape)}"
                )
        if context_frames and (self.given_embed is None or not 0 < context_frames < z_t.shape[2]):
            raise ValueError(
                f"context_frames={context_frames} needs a model built with context=True (the base "
                f"model) and fewer than the {z_t.shape[2]} latent frames"
            )

    def forward(
        self,
        z_t: Tensor,
        logsnr: Tensor,
        labels: Tensor | None = None,
        context_frames: int = 0,
    ) -> Tensor:
        self.check_inputs(z_t, logsnr, labels, context_frames)
        cond = self.logsnr_embed(logsnr)
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full_like(logsnr, self.num_classes, dtype=torch.long)
            cond = cond + self.class_embed(labels)

        x = self.patch_in(patchify(z_t, self.patch_size).permute(0, 2, 3, 4, 1))  # B T H W C
        if self.given_embed is not None:  # always in the graph, so DDP sees its (zero) gradient
            given = torch.arange(x.shape[1], device=x.device) < context_frames
            x = x + given.view(1, -1, 1, 1, 1) * self.given_embed
        skips = []
        for blocks, merge in zip(self.down, self.merge):
            x = self.run_level(blocks, x, cond)
            skips.append(x)
            x = merge(merge_tokens(x))
        x = self.run_level(self.middle, x, cond)
        for blocks, split, skip in zip(reversed(self.up), reversed(self.split), reversed(skips)):
            x = self.run_level(blocks, split_tokens(split(x)) + skip, cond, add_positions=False)
        x = modulate(self.norm_out(x), *self.mod_out(cond).chunk(2, dim=-1))
        v = unpatchify(self.patch_out(x).permute(0, 4, 1, 2, 3), self.patch_size)
        return v_to_x(z_t, v, logsnr)

    def run_level(self, blocks: nn.ModuleList, x: Tensor, cond: Tensor, add_positions: bool = True):
        # Factorised 3D sinusoidal positions on entering a level, then its blocks on (B, T, H*W, C)
        b, t, h, w, c = x.shape
        if add_positions:
            x = x + sincos_3d(t, h, w, c, device=x.device).to(x.dtype).view(t, h, w, c)
        x = run_blocks(blocks, x.reshape(b, t, h * w, c), cond, self.checkpointing)
        return x.reshape(b, t, h, w, c)


def video_transformer_prior(config: AutoencoderConfig) -> VideoTransformer:
    """The stage-1 prior: unconditional, trained on the unweighted ELBO jointly with the encoder."""
    return VideoTransformer(
        config.latent_channels,
        config.prior_widths,
        config.prior_depths,
        head_dim=config.head_dim,
        mode=config.attention,
        patch_size=config.patch_size,
        dropout=config.prior_dropout,
        mlp_ratio=config.mlp_ratio,
    )


def video_transformer_base(config: BaseConfig) -> VideoTransformer:
    """The stage-2 base model: class-conditional (if num_classes) with context frames support."""
    return VideoTransformer(
        config.latent_channels,
        config.widths,
        config.depths,
        head_dim=config.head_dim,
        mode=config.attention,
        patch_size=config.patch_size,
        num_classes=config.num_classes,
        context=config.context,
        dropout=config.dropout,
        mlp_ratio=config.mlp_ratio,
    )


register_network("video_transformer", prior=video_transformer_prior, base=video_transformer_base)

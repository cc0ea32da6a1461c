"""The pipeline: the stage-1 autoencoder and, after stage 2, the base model, with their configs.

It owns saving and loading (`save_pretrained` / `from_pretrained`, through ulvideo.serialization),
the runtime switches, and what a trained model is used for: `reconstruct`, `generate` and frame
prediction. The CLI, the demo, the training export and the evaluation glue all go through it.

An export folder (no pickles)::

    export/autoencoder/   UnifiedLatents: encoder, prior, decoder (model.safetensors + config.json)
    export/base/          the stage-2 base model, when there is one
"""

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .diffusion import StackedRandomGenerator
from .models import ModelConfig, build_base
from .nn import enable_activation_checkpointing, set_attention_backend
from .sample import SamplingConfig, frame_predictor, generate
from .serialization import load_module, save_module
from .ul import UnifiedLatents

AUTOENCODER, BASE = "autoencoder", "base"


class Pipeline:
    """`autoencoder` (a UnifiedLatents) and, optionally, `base` built from `base_config`."""

    def __init__(
        self,
        autoencoder: UnifiedLatents,
        base: nn.Module | None = None,
        base_config: ModelConfig | None = None,
    ):
        if (base is None) != (base_config is None):
            raise ValueError("give the base model together with the config it was built from")
        self.autoencoder, self.base, self.base_config = autoencoder, base, base_config

    @property
    def networks(self) -> list[nn.Module]:
        return [self.autoencoder] + ([self.base] if self.base is not None else [])

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    def to(self, device) -> "Pipeline":
        for network in self.networks:
            network.to(device)
        return self

    def eval(self) -> "Pipeline":
        for network in self.networks:
            network.eval()
        return self

    # runtime switches: never saved (ulvideo.nn.runtime)
    def set_attention_backend(self, backend: str | None) -> "Pipeline":
        for network in self.networks:
            set_attention_backend(network, backend)
        return self

    def enable_activation_checkpointing(self, enabled: bool = True) -> "Pipeline":
        for network in self.networks:
            enable_activation_checkpointing(network, enabled)
        return self

    # saving and loading
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write autoencoder/ (and base/) under `directory`, each file atomically."""
        directory = Path(directory)
        save_module(self.autoencoder, self.autoencoder.config, directory / AUTOENCODER, AUTOENCODER)
        if self.base is not None:
            save_module(self.base, self.base_config, directory / BASE, BASE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location="cpu") -> "Pipeline":
        """Load an export (or the export inside a training checkpoint), in eval mode."""
        directory = Path(directory)
        if (directory / "export").is_dir():
            directory = directory / "export"
        if not (directory / AUTOENCODER).is_dir():
            raise FileNotFoundError(
                f"{directory} is not a ulvideo export: expected {directory / AUTOENCODER} (written "
                "by training as <run>/checkpoint-N/export or <run>/final)"
            )
        autoencoder, _ = load_module(
            directory / AUTOENCODER, UnifiedLatents, AUTOENCODER, map_location
        )
        base = base_config = None
        if (directory / BASE).is_dir():
            base, base_config = load_module(directory / BASE, build_base, BASE, map_location)
        return cls(autoencoder, base, base_config)

    # what a trained model is for
    def require_base(self) -> nn.Module:
        if self.base is None:
            raise ValueError("this pipeline holds no stage-2 base model; load a stage-2 export")
        return self.base

    @torch.no_grad()
    def reconstruct(
        self, video: Tensor, steps: int = 32, method: str = "ddpm", seed: int = 0
    ) -> Tensor:
        """encode -> noisy z0 -> decode; video k's noise depends only on (seed, k)."""
        self.autoencoder.validate_video(video)
        rng = StackedRandomGenerator(video.device, seed, range(len(video)))
        return self.autoencoder.reconstruct(video, steps=steps, method=method, rng=rng)

    def generate(
        self,
        num_videos: int,
        frames: int,
        resolution: int,
        cfg: SamplingConfig,
        *,
        labels: Tensor | None = None,
        context: Tensor | None = None,
        indices: Tensor | None = None,
    ) -> Tensor:
        """UL Algorithm 2 (ulvideo.sample.generate): class-conditional, unconditional or frame
        prediction from `context` frames."""
        return generate(
            self.autoencoder, self.require_base(), num_videos, frames, resolution, cfg,
            labels=labels, context=context, indices=indices,
        )  # fmt: skip

    def frame_predictor(self, cfg: SamplingConfig):
        """`generate(context, num_frames, labels, sample_ids)` for the K600 protocol."""
        return frame_predictor(self.autoencoder, self.require_base(), cfg)

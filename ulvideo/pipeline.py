"""The pipeline: the stage-1 autoencoder and, after stage 2, the base model, with their configs.

It owns saving and loading (`save_pretrained` / `from_pretrained`, through ulvideo.serialization),
the runtime switches, and what a trained model is used for: `reconstruct`, `generate` and frame
prediction. The CLI, the demo, the training export and the evaluation glue all go through it.

An export folder (no pickles)::

    export/autoencoder/   UnifiedLatents: encoder, prior, decoder (model.safetensors + config.json)
    export/autoencoder/student/   the distilled few-step decoder, when there is one
                                  (ulvideo.student, ulvideo.train.distill)
    export/base/          the stage-2 base model, when there is one

A stage-2 training checkpoint's export holds base/ and, instead of a copy of the frozen stage-1
weights, `stage1.json`: the stage-1 export's path and fingerprint (the sha256 of its weights).
Loading it loads that export and refuses one whose weights changed. A run's final export is
self-contained. A Hugging Face Hub repo id ("org/name") loads through ulvideo.hub, which also
publishes an export with its model card (`push_to_hub`).
"""

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .diffusion import StackedRandomGenerator
from .latent_scale import LatentScaling
from .models import AutoencoderConfig, BaseConfig, build_base
from .nn import enable_activation_checkpointing, set_attention_backend
from .sample import SamplingConfig, frame_predictor, generate
from .serialization import CONFIG_NAME, WEIGHTS_NAME, atomic_write, load_module, save_module
from .student import Student, choose_decoder, decoder_steps, load_student, save_student
from .ul import UnifiedLatents

AUTOENCODER, BASE, STAGE1_REFERENCE = "autoencoder", "base", "stage1.json"


def find_export(directory: str | os.PathLike, revision: str | None = None) -> Path:
    """An export folder, given it, a training checkpoint holding one (checkpoint-N/export) or a
    Hugging Face Hub repo id (ulvideo.hub.resolve_checkpoint: a local path wins)."""
    from .hub import resolve_checkpoint

    directory = resolve_checkpoint(directory, revision)
    if (directory / "export").is_dir():
        directory = directory / "export"
    if not ((directory / AUTOENCODER).is_dir() or (directory / STAGE1_REFERENCE).is_file()):
        raise FileNotFoundError(
            f"{directory} is not a ulvideo export: expected {directory / AUTOENCODER} (written "
            "by training as <run>/checkpoint-N/export or <run>/final), or give a Hugging Face "
            "Hub repo id org/name"
        )
    return directory


def autoencoder_export(directory: str | os.PathLike) -> Path:
    """The export that holds the autoencoder weights: `directory`'s own, or the stage-1 export a
    stage-2 checkpoint refers to, checked against the fingerprint recorded with the reference."""
    directory = find_export(directory)
    if (directory / AUTOENCODER).is_dir():
        return directory
    reference = json.loads((directory / STAGE1_REFERENCE).read_text())
    stage1 = Path(reference["stage1_export"])
    if not stage1.exists() or autoencoder_fingerprint(stage1) != reference["fingerprint"]:
        raise ValueError(
            f"{directory} refers to the stage-1 export {stage1} with fingerprint "
            f"{reference['fingerprint'][:12]}, which is missing or holds other weights; restore "
            "it, or use the run's self-contained final export"
        )
    return autoencoder_export(stage1)


def autoencoder_fingerprint(directory: str | os.PathLike) -> str:
    """The sha256 of an export's autoencoder weights, as its config.json records it."""
    meta = json.loads((autoencoder_export(directory) / AUTOENCODER / CONFIG_NAME).read_text())
    return meta["files"][WEIGHTS_NAME]["sha256"]


def load_autoencoder(directory: str | os.PathLike, map_location="cpu") -> UnifiedLatents:
    """The autoencoder of an export, following a stage-2 checkpoint's reference to stage 1."""
    path = autoencoder_export(directory) / AUTOENCODER
    return load_module(path, UnifiedLatents, AUTOENCODER, AutoencoderConfig, map_location)[0]


def save_stage2_checkpoint(
    directory: str | os.PathLike, base: nn.Module, base_config: BaseConfig, stage1_export
) -> Path:
    """base/ and a reference to the stage-1 export (its path and fingerprint), not its weights."""
    directory = Path(directory)
    save_module(base, base_config, directory / BASE, BASE)
    stage1 = autoencoder_export(stage1_export).resolve()
    reference = {"stage1_export": str(stage1), "fingerprint": autoencoder_fingerprint(stage1)}
    atomic_write(
        directory / STAGE1_REFERENCE, lambda p: p.write_text(json.dumps(reference, indent=2))
    )
    return directory


class Pipeline:
    """`autoencoder` (a UnifiedLatents) and, optionally, `base` built from `base_config` and
    `student`, a distilled few-step decoder (ulvideo.student)."""

    def __init__(
        self,
        autoencoder: UnifiedLatents,
        base: nn.Module | None = None,
        base_config: BaseConfig | None = None,
        student: Student | None = None,
    ):
        if (base is None) != (base_config is None):
            raise ValueError("give the base model together with the config it was built from")
        latent = autoencoder.config.latent_channels
        if base_config is not None and base_config.latent_channels != latent:
            raise ValueError(
                f"the base model takes {base_config.latent_channels} latent channels, the "
                f"autoencoder makes {latent}: build the base with latent_channels={latent}"
            )
        self.autoencoder, self.base, self.base_config = autoencoder, base, base_config
        self.student = student

    @property
    def networks(self) -> list[nn.Module]:
        return [self.autoencoder] + [m for m in (self.base, self.student) if m is not None]

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
        if self.student is not None:
            save_student(self.student, directory / AUTOENCODER)
        if self.base is not None:
            save_module(self.base, self.base_config, directory / BASE, BASE)
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, map_location="cpu", revision: str | None = None
    ) -> "Pipeline":
        """Load an export (or the export inside a training checkpoint, or a hub repo id "org/name"
        at `revision`), in eval mode, its files verified."""
        directory = find_export(directory, revision)
        autoencoder = load_autoencoder(directory, map_location)
        student = load_student(
            autoencoder_export(directory) / AUTOENCODER, autoencoder.config, map_location
        )
        base = base_config = None
        if (directory / BASE).is_dir():
            base, base_config = load_module(
                directory / BASE, build_base, BASE, BaseConfig, map_location
            )
        return cls(autoencoder, base, base_config, student)

    def push_to_hub(
        self, repo_id: str, local_dir: str | os.PathLike | None = None, **kwargs
    ) -> str:
        """Upload the export with a generated README.md model card to the hub repo `repo_id`, or
        only write that folder to `local_dir` (ulvideo.hub.push_to_hub: `training_run`,
        `evaluations`, `license`, `private`, `token`, `commit_message`)."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, local_dir, **kwargs)

    # what a trained model is for
    def choose_decoder(self, steps: int | None, decoder: str = "auto") -> Student | None:
        """The student that decodes `steps` steps, or None for the teacher (ulvideo.student)."""
        return choose_decoder(self.student, steps, decoder)

    def require_base(self) -> nn.Module:
        if self.base is None:
            raise ValueError("this pipeline holds no stage-2 base model; load a stage-2 export")
        return self.base

    @torch.no_grad()
    def reconstruct(
        self,
        video: Tensor,
        steps: int | None = None,
        method: str = "ddpm",
        seed: int = 0,
        window: int | None = None,
        tile: int | None = None,
        decoder: str = "auto",
        *,
        grid: str = "t",
    ) -> Tensor:
        """encode -> noisy z0 -> decode with the sampler `method` on `grid`, streamed / in windows
        of `window` frames and tiles of `tile` pixels when given (UnifiedLatents.encode, decode);
        video k's noise depends only on (seed, k). `decoder` picks the teacher or the distilled
        student (choose_decoder); `steps` None: the student's own, else the teacher's default."""
        self.autoencoder.validate_video(video)
        student = self.choose_decoder(steps, decoder)
        steps = decoder_steps(student, steps)
        rng = StackedRandomGenerator(video.device, seed, range(len(video)))
        return self.autoencoder.reconstruct(
            video, steps, method, rng, window, tile, student, grid=grid
        )

    def generate(
        self,
        num_videos: int,
        frames: int,
        resolution: int | tuple[int, int],
        sampling: SamplingConfig,
        *,
        labels: Tensor | None = None,
        context: Tensor | None = None,
        indices: Tensor | None = None,
    ) -> Tensor:
        """UL Algorithm 2 (ulvideo.sample.generate): class-conditional, unconditional or frame
        prediction from `context` frames; `resolution` is a side or (H, W)."""
        return generate(
            self.autoencoder, self.require_base(), num_videos, frames, resolution, sampling,
            labels=labels, context=context, indices=indices,
            student=self.choose_decoder(sampling.decoder_steps, sampling.decoder),
            latent_multiplier=self.latent_multiplier,
        )  # fmt: skip

    def frame_predictor(self, sampling: SamplingConfig):
        """`generate(context, num_frames, labels, sample_ids)` for the K600 protocol."""
        student = self.choose_decoder(sampling.decoder_steps, sampling.decoder)
        return frame_predictor(
            self.autoencoder, self.require_base(), sampling, student, self.latent_multiplier
        )

    @property
    def latent_multiplier(self) -> float:
        """What the base model's latents are the stage-1 latents times (LatentScaling)."""
        regularizer = self.autoencoder.config.regularizer
        return LatentScaling.of(self.base_config.latent_scale, regularizer).multiplier

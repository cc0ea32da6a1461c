"""Self-describing exports: a stage-1 autoencoder, optionally with a stage-2 base model.

Layout of an export directory (each part is safetensors + config.json, no pickles)::

    export/ul/     the UnifiedLatents model (encoder, prior, decoder)
    export/base/   the stage-2 base model, when there is one
"""

from pathlib import Path

from torch import nn

from .models import ModelConfig
from .ul import UnifiedLatents, load_module, save_module


def save_pipeline(
    directory,
    ul: UnifiedLatents,
    base: nn.Module | None = None,
    base_config: ModelConfig | None = None,
) -> None:
    """Write `ul` (and `base`, built from `base_config`) under `directory`, each file atomically."""
    directory = Path(directory)
    ul.save_pretrained(directory / "ul")
    if base is not None:
        save_module(base, base_config, directory / "base", kind="base")


def load_pipeline(directory, map_location="cpu") -> tuple[UnifiedLatents, nn.Module | None]:
    """Load an export written by `save_pipeline`, in eval mode. Accepts the export dir or a training
    checkpoint dir."""
    directory = Path(directory)
    if (directory / "export").is_dir():
        directory = directory / "export"
    if not (directory / "ul").is_dir():
        raise FileNotFoundError(
            f"{directory} is not a ulvideo export: expected {directory / 'ul'} (written by training "
            "as <run>/checkpoint-N/export or <run>/final)"
        )
    ul = UnifiedLatents.from_pretrained(directory / "ul", map_location=map_location)
    base = None
    if (directory / "base").is_dir():
        base, _ = load_module(directory / "base", map_location, kind="base")
    return ul.eval(), (base.eval() if base is not None else None)  # no dropout when sampling

"""The one place that writes and reads weights: self-describing, pickle-free folders.

A saved part is `model.safetensors` beside `config.json`, which holds the part's kind, its config
and the size and sha256 of `model.safetensors` (written after it, verified before it is read).
Each file is written atomically. The caller says which config class the part has and how to build
it from its config, so this module knows no networks.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .integrity import CorruptFileError, file_records, verify_files
from .models.presets import JSONConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
COPY_AGAIN = (
    "copy the export again (from the hub: download it again with force_download=True), or use "
    "the export inside a training checkpoint (checkpoint-N/export)"
)
RESTORE = f"restore the {CONFIG_NAME} written with these weights (was it edited?)"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a temporary name in the same folder, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_module(
    module: nn.Module, config: JSONConfig, directory: str | os.PathLike, kind: str
) -> Path:
    """Save `module`, built from `config`, as a `kind` part ("autoencoder", "base") in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), {"kind": kind}))
    meta = {
        "kind": kind,
        "ulvideo_version": __version__,
        "config": config.to_dict(),
        "files": file_records(directory, [WEIGHTS_NAME]),
    }
    atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return directory


def read_config(directory: str | os.PathLike, kind: str, config_class: type[JSONConfig]):
    """The config of the `kind` part saved in `directory`, with its files verified."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: a saved part holds {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}, as written by save_pretrained"
            )
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(directory / CONFIG_NAME, f"not JSON ({err})", COPY_AGAIN) from err
    needed = ("kind", "config", "files")
    if not isinstance(meta, dict) or not set(needed) <= set(meta):
        raise ValueError(f"{directory / CONFIG_NAME} is not a ulvideo config (needs {needed})")
    if meta["kind"] != kind:
        raise ValueError(f"{directory} holds a {meta['kind']!r} part, not {kind!r}")
    verify_files(directory, meta["files"], COPY_AGAIN)
    try:
        return config_class.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / CONFIG_NAME}: {err}; {RESTORE}") from err


def load_module(
    directory: str | os.PathLike,
    build: Callable[[JSONConfig], nn.Module],
    kind: str,
    config_class: type[JSONConfig],
    map_location="cpu",
) -> tuple[nn.Module, JSONConfig]:
    """Rebuild a `kind` part saved by save_module: its `config_class` config, then `build(config)`
    and the weights, in eval mode."""
    directory = Path(directory)
    config = read_config(directory, kind, config_class)
    module = build(config)
    state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} does not match {CONFIG_NAME}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}; {RESTORE}"
        )
    module.load_state_dict(state)
    return module.to(map_location).eval(), config

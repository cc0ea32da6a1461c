"""FVD protocol plumbing: TF1 resize, checks, batching, the CLI and its cache (cheap features)."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from ulvideo.data import write_video
from ulvideo.evaluate.frechet import FeatureStats, stats_distance
from ulvideo.evaluate.fvd import (
    PROTOCOLS,
    center_square,
    compute_fvd,
    main,
    preprocess,
    quantize_uint8,
    resize_frames,
    resize_half_pixel,
    video_batches,
    video_features,
)
from ulvideo.evaluate.videos import array_to_videos, iter_videos


def pooled_features() -> nn.Module:
    """A cheap stand-in for the I3D: 3 x 4 x 2 x 2 average-pooled cells of the 224 px input."""
    features = nn.Sequential(nn.AdaptiveAvgPool3d((4, 2, 2)), nn.Flatten())
    features.weights_sha256, features.weights_format = "pooled-test-features", "test"
    return features


class MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("the feature network ran before the inputs were checked")


def tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pixel-by-pixel TF 1.x resize_bilinear(align_corners=False) of an H x W image, with TF's
    float32 source coordinates (output index x float32(in / out))."""
    in_h, in_w = image.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        y = float(np.float32(i) * np.float32(in_h / out_h))
        y0, y1 = int(math.floor(y)), min(int(math.floor(y)) + 1, in_h - 1)
        for j in range(out_w):
            x = float(np.float32(j) * np.float32(in_w / out_w))
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


def test_preprocess_takes_the_first_frames_and_each_protocols_resize_path():
    video = torch.rand(2, 3, 17, 128, 128) * 2 - 1
    first = video[:, :, :16]
    direct = preprocess(video, "tfgan")
    assert direct.shape == (2, 3, 16, 224, 224)
    torch.testing.assert_close(direct, resize_frames(first, 224), rtol=0, atol=1e-6)
    via_64 = preprocess(video, "magvit-k600")
    torch.testing.assert_close(via_64, resize_frames(first[..., ::2, ::2], 224), rtol=0, atol=1e-6)
    stylegan = preprocess(video, "stylegan-v")
    torch.testing.assert_close(stylegan, resize_half_pixel(quantize_uint8(first), 224))
    assert not torch.equal(direct, via_64) and not torch.allclose(direct, stylegan, atol=1e-3)
    # MAGVIT skips its 64x64 step for 64x64 frames; the TF1 resize 64 -> 64 is the identity
    small = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    torch.testing.assert_close(preprocess(small, "magvit-k600"), preprocess(small, "tfgan"))
    with pytest.raises(ValueError, match="unknown FVD protocol 'magvit'.*magvit-k600, tfgan"):
        preprocess(video, "magvit")


def ramp(width: int = 128) -> torch.Tensor:
    """A 1 x 3 x 16 x 128 x width video whose value rises linearly from -1 across the columns."""
    columns = -1 + 2 * torch.arange(width, dtype=torch.float32) / (width - 1)
    return columns.expand(1, 3, 16, 128, width).clone()


def test_magvit_and_tfgan_paths_match_closed_forms_at_128_to_64_to_224():
    j = np.arange(224)
    step = 2 / 127  # the ramp's rise per 128 px column
    # TF1: output j reads source j * n / 224, clamped at the last pixel
    tfgan = -1 + step * np.minimum(j * 128 / 224, 127)
    # 128 -> 64 keeps the even columns (rise 2 steps each), then 64 -> 224 reads j * 64 / 224
    magvit = -1 + 2 * step * np.minimum(j * 64 / 224, 63)
    for name, expected in (("tfgan", tfgan), ("magvit-k600", magvit)):
        row = preprocess(ramp(), name)[0, 0, 0]
        np.testing.assert_allclose(row.numpy(), np.broadcast_to(expected, (224, 224)), atol=2e-6)
    # the paths agree on a ramp except at the right edge, where MAGVIT's stops at column 126
    assert np.abs(tfgan[:221] - magvit[:221]).max() < 1e-12
    assert magvit[221:] == pytest.approx([-1 + 126 * step] * 3) and tfgan[-1] == 1.0

    constant = torch.full((1, 3, 16, 128, 128), 0.25)
    for name in ("tfgan", "magvit-k600"):
        assert torch.equal(preprocess(constant, name), torch.full((1, 3, 16, 224, 224), 0.25))
    # alternating columns +1, -1: the 64 px step keeps only the +1 columns (aliasing)
    stripes = torch.tensor([1.0, -1.0]).repeat(64).expand(1, 3, 16, 128, 128)
    assert torch.equal(preprocess(stripes, "magvit-k600"), torch.ones(1, 3, 16, 224, 224))
    image = stripes[0, 0, 0].double().numpy()
    direct = preprocess(stripes, "tfgan")[0, 0, 0].numpy()
    np.testing.assert_allclose(direct, tf1_resize_reference(image, 224, 224), atol=2e-6)
    assert direct.mean() < 0.1  # the direct path averages the stripes instead


def test_magvit_path_matches_a_pixelwise_reference_on_a_random_image():
    image = np.random.default_rng(1).uniform(-1, 1, (128, 128))
    video = torch.from_numpy(image).float().expand(1, 3, 16, 128, 128)
    expected = tf1_resize_reference(tf1_resize_reference(image, 64, 64), 224, 224)
    got = preprocess(video, "magvit-k600")[0, 1, 5].numpy()
    np.testing.assert_allclose(got, expected, atol=3e-6)


def test_stylegan_v_path_crops_rounds_and_resizes_with_half_pixel_centres():
    two = torch.tensor([-1.0, 1.0]).expand(1, 1, 1, 2, 2)
    # source x = (j + 1/2) * 2 / 4 - 1/2 = -1/4, 1/4, 3/4, 5/4, clamped to [0, 1]
    assert resize_half_pixel(two, 4)[0, 0, 0, 0].tolist() == [-1.0, -0.5, 0.5, 1.0]
    j = np.arange(224)
    expected = -1 + 2 / 127 * np.clip((j + 0.5) * 128 / 224 - 0.5, 0, 127)
    row = resize_half_pixel(ramp(), 224)[0, 0, 0, 100].numpy()
    np.testing.assert_allclose(row, expected, atol=2e-6)

    # floor(127.5 x + 128): -1 -> 0, 0 -> 128, 0.3 -> 166, 1 -> 255; uint8 frames pass unchanged
    values = quantize_uint8(torch.tensor([-1.0, 0.0, 0.3, 1.0]))
    assert ((values + 1) * 127.5).round().tolist() == [0, 128, 166, 255]
    levels = torch.arange(256.0) / 127.5 - 1
    torch.testing.assert_close(quantize_uint8(levels), levels, rtol=0, atol=1e-6)

    # the centre square, offset round((W - H) / 2) as torchvision's center_crop (round half even)
    columns = torch.arange(176.0).expand(1, 1, 1, 144, 176)
    assert center_square(columns)[0, 0, 0, 0, [0, -1]].tolist() == [16, 159]
    assert center_square(torch.arange(149.0).expand(1, 1, 1, 144, 149))[0, 0, 0, 0, 0] == 2
    video = torch.rand(1, 3, 16, 144, 176) * 2 - 1
    torch.testing.assert_close(
        preprocess(video, "stylegan-v"),
        resize_half_pixel(quantize_uint8(video[..., 16:160]), 224),
    )


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
    # the Fréchet distance of feature statistics computed here, from the 224 px TF1-resized inputs
    features = pooled_features()

    def stats(videos):
        return FeatureStats.from_features(features(preprocess(videos, "tfgan")))

    expected = stats_distance(stats(real), stats(fake))
    assert expected > 0.01
    assert result["fvd"] == pytest.approx(expected, rel=1e-9)
    assert compute_fvd(real, real, i3d=pooled_features())["fvd"] == pytest.approx(0, abs=1e-10)
    grouped = compute_fvd(real, fake, i3d=pooled_features(), groups=2)
    halves = [stats_distance(stats(r), stats(f)) for r, f in zip(real.split(3), fake.split(3))]
    assert grouped["fvd_groups"] == pytest.approx(halves, rel=1e-9)
    assert grouped["fvd_std"] == pytest.approx(abs(halves[0] - halves[1]) / 2, rel=1e-9)


def test_reports_name_their_protocol_and_list_departures_from_it():
    torch.manual_seed(0)
    real = torch.rand(6, 3, 16, 128, 128) * 2 - 1  # 128 px: the 64 px step drops pixels
    fake = (real * 0.5).flip(-1)
    reports = {
        name: compute_fvd(real, fake, i3d=pooled_features(), protocol=name, groups=1)
        for name in PROTOCOLS
    }
    assert {name: r["protocol"]["name"] for name, r in reports.items()} == {n: n for n in PROTOCOLS}
    assert reports["magvit-k600"]["protocol"]["sizes"] == [64, 224]
    assert len({round(r["fvd"], 9) for r in reports.values()}) == 3  # three different numbers
    assert reports["tfgan"]["protocol_deviations"] == []  # tfgan fixes no sample count
    assert reports["stylegan-v"]["protocol_deviations"] == ["6 samples, the protocol fixes 2048"]
    assert reports["magvit-k600"]["protocol_deviations"] == [
        "6 samples, the protocol fixes 50000",
        "1 groups, the protocol fixes 4",
    ]
    # a protocol's settings changed under its name are listed too, not only the counts
    changed = dataclasses.replace(PROTOCOLS["tfgan"], center_crop=True, quantize=True)
    report = compute_fvd(real, fake, i3d=pooled_features(), protocol=changed, groups=1)
    assert report["protocol_deviations"] == [
        "center_crop True, the protocol fixes False",
        "quantize True, the protocol fixes False",
    ]


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
    write_video(path, frames, fps=25, options={"crf": "10"})


def test_cli_reads_folders_and_arrays_prints_json_and_caches_the_reference(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("ulvideo.evaluate.fvd.load_i3d", lambda weights=None: pooled_features())
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
    magvit = [*args, "--protocol", "magvit-k600", "--groups", "1"]
    assert main(magvit)["fvd"] > 0  # another protocol, another key
    assert len(list(cache.iterdir())) == 2
    assert report["protocol"]["name"] == "tfgan"

    # a cache file computed under another protocol is refused, not silently compared
    (other,) = set(cache.iterdir()) - {cache_file}
    other.write_bytes(cache_file.read_bytes())
    with pytest.raises(ValueError, match="computed under FVD protocol 'tfgan'.*not 'magvit-k600'"):
        main(magvit)


def test_cli_reference_cache_is_keyed_by_the_videos_it_holds(tmp_path, monkeypatch):
    # a cache hit must give the FVD of a run without the cache: another --max-videos, or the
    # reference file rewritten (same size, new contents and mtime), is another key
    monkeypatch.setattr("ulvideo.evaluate.fvd.load_i3d", lambda weights=None: pooled_features())
    real, fake = tmp_path / "real.npy", tmp_path / "fake.npy"
    np.save(real, moving_squares(4, seed=1))
    np.save(fake, moving_squares(4, seed=2))
    args = ["--real", str(real), "--fake", str(fake), "--cache-dir", str(tmp_path / "cache")]

    def fvd(*extra):
        cached = main([*args, *extra])
        assert cached["fvd"] == pytest.approx(main([*args, *extra, "--no-cache"])["fvd"], rel=1e-9)
        return cached["fvd"]

    two = fvd("--max-videos", "2")
    assert fvd("--max-videos", "4") != pytest.approx(two, rel=1e-3)  # 4 reference videos, not 2
    before = real.stat()
    np.save(real, moving_squares(4, seed=3))
    os.utime(real, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert real.stat().st_size == before.st_size
    fvd("--max-videos", "4")
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_cli_rejects_short_videos_and_mismatched_resolutions(tmp_path, monkeypatch):
    monkeypatch.setattr("ulvideo.evaluate.fvd.load_i3d", lambda weights=None: MustNotRun())
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


@pytest.mark.slow
def test_package_exports_resolve_and_the_cli_module_runs_once():
    import ulvideo.evaluate as evaluate

    assert all(getattr(evaluate, name) is not None for name in evaluate.__all__)
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "ulvideo.evaluate.fvd", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--real" in result.stdout and "magvit-k600,tfgan,stylegan-v" in result.stdout

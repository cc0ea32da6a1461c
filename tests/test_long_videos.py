"""Long and large videos (docs/LONG_VIDEOS.md): causal streaming encode, any aspect ratio, windowed decode,
long generation window by window."""

from dataclasses import replace

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from ulvideo import UnifiedLatents
from ulvideo.diffusion import (
    METHODS,
    LinearLogSNR,
    StackedRandomGenerator,
    alpha_sigma,
    decode_windows,
    logsnr_grid,
    ramp_weights,
    randn_frames,
    randn_like,
    sample_ddpm,
    sample_windows,
    to_data,
    window_starts,
)
from ulvideo.models import (
    autoencoder_preset,
    base_preset,
    build_base,
    check_video_shape,
    nearest_frame_counts,
)
from ulvideo.nn import ATTENTION_MODES, Conv3d, sincos_1d, sincos_3d

TINY = autoencoder_preset("tiny")
COMPRESSION = (TINY.temporal_downsample, TINY.spatial_downsample)  # 4, 8


@pytest.fixture(scope="module")
def tiny_ul():
    torch.manual_seed(0)
    return UnifiedLatents(TINY).eval()


def _video(frames, height=16, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


# ---------------------------------------------------------------- causal streaming encode


@pytest.mark.parametrize("frames", [1, 5, 17, 65])
@pytest.mark.parametrize("window", [5, 9, 13, 65])
def test_streamed_encode_equals_whole_clip(tiny_ul, frames, window):
    video = _video(frames, seed=frames)
    with torch.no_grad():
        whole = tiny_ul.encode(video)
        streamed = tiny_ul.encode(video, window=window)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


def test_strided_causal_conv_streams_any_chunking():
    # stride 2 and stride 1, chunks that complete 1 to several outputs, against one call
    torch.manual_seed(0)
    for stride in (1, 2):
        conv = Conv3d(3, 4, stride=(stride, 1))
        x = torch.randn(1, 3, 21, 4, 4)
        cuts = [0, 1, 4, 5, 9, 15, 21] if stride == 1 else [0, 1, 3, 7, 9, 15, 21]
        cache = {}
        with torch.no_grad():
            parts = [conv(x[:, :, a:b], cache) for a, b in zip(cuts, cuts[1:])]
            torch.testing.assert_close(torch.cat(parts, 2), conv(x), rtol=0, atol=1e-6)


def test_streamed_encode_rejects_bad_windows(tiny_ul):
    video = _video(9)
    with pytest.raises(
        ValueError, match=r"window=6: windows take 1 \+ 4k frames, at least 5; use 5 or 9"
    ):
        tiny_ul.encode(video, window=6)
    with pytest.raises(ValueError, match="window=1: .*; use 5$"):
        tiny_ul.encode(video, window=1)
    with pytest.raises(ValueError, match="chunk 1 has 3 frames.*multiple of temporal_downsample=4"):
        list(tiny_ul.encoder.stream([video[:, :, :5], video[:, :, 5:8]]))


def test_encoder_memory_is_bounded_by_the_window(tiny_ul):
    # every conv of a streamed 65-frame encode sees at most the window (its past is added inside)
    longest = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: longest.append(args[0].shape[2]))
        for m in tiny_ul.encoder.modules()
        if isinstance(m, Conv3d)
    ]
    try:
        with torch.no_grad():
            tiny_ul.encode(_video(65), window=9)
    finally:
        for hook in hooks:
            hook.remove()
    assert max(longest) == 9


def test_pipeline_and_cli_stream_the_encoder(tiny_ul, tmp_path):
    import av
    from safetensors.torch import load_file

    from ulvideo.cli import main
    from ulvideo.media import write_mp4
    from ulvideo.pipeline import Pipeline

    pipeline = Pipeline(tiny_ul)
    video = _video(13)
    torch.testing.assert_close(
        pipeline.autoencoder.encode(video, window=5), tiny_ul.encode(video), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        pipeline.reconstruct(video, steps=2, window=13), pipeline.reconstruct(video, steps=2),
        rtol=0, atol=1e-4,
    )  # fmt: skip
    path = pipeline.save_pretrained(tmp_path / "export")
    write_mp4(video[0], tmp_path / "in.mp4")
    outs = {}
    for window in (None, 5):
        out = tmp_path / f"z{window}.safetensors"
        flag = [] if window is None else ["--window", str(window)]
        assert main(["encode", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                     "--frames", "13", "--resolution", "16", "--out", str(out), *flag]) == 0  # fmt: skip
        outs[window] = load_file(out)["z_clean"]
    assert outs[5].shape == (1, 8, 4, 2, 2)
    torch.testing.assert_close(outs[5], outs[None], rtol=0, atol=1e-5)
    assert main(["encode", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "13", "--out", str(tmp_path / "bad"), "--window", "6"]) == 2  # fmt: skip
    assert main(["reconstruct", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "13", "--resolution", "16", "--steps", "1", "--window", "5", "--tile",
                 "8", "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    with av.open(str(tmp_path / "r" / "reconstruction.mp4")) as f:
        assert sum(1 for _ in f.decode(video=0)) == 13


# ---------------------------------------------------------------- any aspect ratio


def test_frame_count_error_names_the_nearest_valid_counts():
    assert nearest_frame_counts(18, 4) == [17, 21]
    assert nearest_frame_counts(2, 4) == [1, 5]
    assert nearest_frame_counts(65, 4) == [65]
    with pytest.raises(ValueError, match=r"66 frames.*1 \+ 4k frames.*use 65 or 69 frames"):
        check_video_shape((1, 3, 66, 16, 16), TINY)


def test_positions_take_a_non_square_grid():
    # token (t, i, j) of a 2 x 3 x 5 grid: time, row and column sinusoids of its own indices
    dim = 36
    pos = sincos_3d(2, 3, 5, dim).view(2, 3, 5, dim)
    t, i, j = 1, 2, 4
    expected = torch.cat(
        [sincos_1d(torch.tensor([v]), d)[0] for v, d in ((t, 12), (i, 12), (j, 12))]
    )
    torch.testing.assert_close(pos[t, i, j], expected)


def test_the_base_models_tokens_carry_their_own_row_and_column():
    # on a 2 x 2 x 4 latent grid of zeros every token enters the first block as the same patch
    # embedding plus its position: token (t, i, j) minus token (0, 0, 0) is the time, row and
    # column sinusoids of its own indices minus those of 0 (transposed, row i reads column i's)
    from ulvideo.nn import TransformerBlock

    torch.manual_seed(0)
    base = build_base(base_preset("tiny", latent_channels=8)).eval()
    inputs = []
    blocks = [m for m in base.modules() if isinstance(m, TransformerBlock)]
    hooks = [b.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for b in blocks]
    try:
        with torch.no_grad():
            base(torch.zeros(1, 8, 2, 2, 4), torch.tensor([0.5]))
    finally:
        for hook in hooks:
            hook.remove()
    x = inputs[0][0]  # the first block's input: T x (H W) x C
    dim = x.shape[-1]
    parts = (dim - 4 * (dim // 6), 2 * (dim // 6), 2 * (dim // 6))  # time, row, column channels
    t, i, j = torch.meshgrid(torch.arange(2), torch.arange(2), torch.arange(4), indexing="ij")
    pos = torch.cat([sincos_1d(v.flatten(), d) for v, d in zip((t, i, j), parts)], -1)
    torch.testing.assert_close(x.reshape(-1, dim) - x[0, 0], pos - pos[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_non_square_video_through_every_part(mode):
    torch.manual_seed(0)
    tiny_ul = UnifiedLatents(autoencoder_preset("tiny", attention=mode, decoder_attention=mode))
    tiny_ul.eval()
    base = build_base(base_preset("tiny", latent_channels=8, attention=mode)).eval()
    video = _video(5, height=16, width=32)
    logsnr = torch.tensor([0.5])
    with torch.no_grad():
        z = tiny_ul.encode(video, window=5)
        assert z.shape == (1, 8, 2, 2, 4)
        assert tiny_ul.decoder(video, z, logsnr).shape == video.shape
        assert tiny_ul.prior(z, logsnr).shape == z.shape
        assert base(z, logsnr).shape == z.shape
        assert base(z, logsnr, context_frames=1).shape == z.shape
        assert tiny_ul.decode(z, steps=2).shape == video.shape
        # a wide clip is not its transpose: the grid's two axes are told apart
        tall = tiny_ul.decoder(video.transpose(3, 4), z.transpose(3, 4), logsnr)
        wide = tiny_ul.decoder(video, z, logsnr)
        assert (tall.transpose(3, 4) - wide).abs().max() > 1e-3


def test_clip_transform_keeps_the_aspect_ratio():
    import torch.nn.functional as F

    from ulvideo.data import clip_transform

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 240, 320, 3), dtype=torch.uint8, generator=g)
    # 240 x 320 covers 64 x 128 at scale max(64/240, 128/320) = 0.4: 96 x 128, rows 16:80 kept
    resized = F.interpolate(
        frames.permute(0, 3, 1, 2), size=(96, 128), mode="bilinear", antialias=True
    )
    expected = resized[..., 16:80, :].permute(1, 0, 2, 3).float() / 127.5 - 1
    video = clip_transform(frames.numpy(), (64, 128))
    assert video.shape == (3, 3, 64, 128)
    torch.testing.assert_close(video, expected, rtol=0, atol=1e-6)
    assert clip_transform(frames.numpy(), 32).shape == (3, 3, 32, 32)  # a side stays square


def test_clip_sampling_keeps_a_non_square_size():
    import numpy as np

    from ulvideo.data import ClipSampling

    sampling = ClipSampling.default(False, resolution=(64, 128))
    frames = np.random.default_rng(0).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    assert sampling.transform(frames, np.random.default_rng(0)).shape == (3, 3, 64, 128)
    training = ClipSampling.default(True, resolution=(64, 128))
    assert training.transform(frames, np.random.default_rng(0)).shape == (3, 3, 64, 128)
    with pytest.raises(ValueError, match="a frame size needs height, width >= 1"):
        ClipSampling(resolution=(0, 128))


@pytest.mark.slow
def test_generate_and_cli_sample_non_square(tiny_ul, tmp_path, capsys):
    import av

    from ulvideo.cli import main
    from ulvideo.pipeline import Pipeline
    from ulvideo.sample import SamplingConfig

    torch.manual_seed(0)
    base_cfg = base_preset("tiny", latent_channels=TINY.latent_channels)
    pipeline = Pipeline(tiny_ul, build_base(base_cfg).eval(), base_cfg)
    sampling = SamplingConfig(base_steps=2, decoder_steps=2)
    assert pipeline.generate(2, 5, (16, 32), sampling).shape == (2, 3, 5, 16, 32)
    context = _video(5, height=32, width=16)
    predicted = pipeline.generate(1, 9, (32, 16), sampling, context=context)
    assert predicted.shape == (1, 3, 9, 32, 16)
    torch.testing.assert_close(predicted[:, :, :5], context)
    path = pipeline.save_pretrained(tmp_path / "export")
    assert main(["sample", "--checkpoint", str(path), "--num", "1", "--frames", "5", "--base_steps",
                 "1", "--decoder_steps", "1", "--resolution", "16x32", "--out",
                 str(tmp_path / "s")]) == 0  # fmt: skip
    with av.open(str(tmp_path / "s" / "sample_0000.mp4")) as f:
        frame = next(f.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape[:2] == (16, 32)
    # windowed and tiled: the decoder only ever sees one 5-frame, 16 x 16 window (its memory
    # bound), each of the clip's windows once per step
    windowed = replace(sampling, window=5, window_context=1, tile=16)
    seen = []
    hook = tiny_ul.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    try:
        assert pipeline.generate(1, 9, (16, 32), windowed).shape == (1, 3, 9, 16, 32)
    finally:
        hook.remove()
    windows = decode_windows((3, 2, 4), *COMPRESSION, window=5, tile=16)  # 2 windows x 3 tiles
    steps = sampling.decoder_steps
    assert seen == [(1, 3, 5, 16, 16)] * (len(windows) * steps) and len(windows) == 6
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(path), "--resolution", "16by32"])
    assert "'16by32': give a side (128) or height x width (96x160)" in capsys.readouterr().err


# ---------------------------------------------------------------- windowed decode


def _z0(frames, height=16, width=16):
    g = torch.Generator().manual_seed(frames)
    return torch.randn(1, TINY.latent_channels, frames, height, width, generator=g)


@pytest.mark.slow
def test_one_window_covering_the_clip_is_the_plain_decoder(tiny_ul):
    # reference: the sampler over the decoder itself, with the same per-video noise drawn frame
    # by frame, whole-clip steps instead of streamed frames
    z0 = _z0(3, 2, 4)
    rng = StackedRandomGenerator("cpu", 0, [0])

    def noise(z):
        return randn_frames(torch.empty_like(z), lambda frame: randn_like(frame, rng))

    reference = sample_ddpm(
        lambda x_t, logsnr: tiny_ul.decoder(x_t, z0, logsnr).clamp(-1, 1),
        noise(z0.new_empty(1, 3, 9, 16, 32)),
        to_data(logsnr_grid(tiny_ul.pixel_schedule, 3)),
        noise_sampler=noise,
    ).clamp(-1, 1)
    for options in ({}, {"window": 9}, {"window": 9, "tile": 32}, {"window": 41, "tile": 64}):
        video = tiny_ul.decode(z0, steps=3, rng=StackedRandomGenerator("cpu", 0, [0]), **options)
        assert torch.equal(video, reference), options


class PerFrameDecoder(torch.nn.Module):
    """x_hat of each pixel from its own noisy value and its latent (pixel frame f <-> latent
    frame round(f / 4)): no context, so every window predicts the whole clip's values."""

    def forward(self, x_t, z0, logsnr):
        frames = (torch.arange(x_t.shape[2]) + 2) // 4
        z = z0[:, :3, frames].repeat_interleave(8, 3).repeat_interleave(8, 4)
        return torch.tanh(0.5 * x_t + z + 0.1 * logsnr.view(-1, 1, 1, 1, 1))


@pytest.mark.parametrize("method", METHODS)
def test_windows_and_tiles_blend_back_to_the_whole_clip(method):
    ul = UnifiedLatents(TINY).eval()
    ul.decoder = PerFrameDecoder()  # a local model: plain assignment, nothing to undo
    # float64: Heun's corrector multiplies the rounding of a float32 blend by up to
    # sigma_from / sigma_to (e^3.75 a step on this grid): 6e-5 apart in float32, 3e-13 here
    z0 = _z0(9, 4, 6).double()  # 33 x 32 x 48 pixels

    def decode(**options):
        rng = StackedRandomGenerator("cpu", 1, [0])
        return ul.decode(z0, 4, method, rng, grid="logsnr", **options)

    whole = decode()
    for options in (
        {"window": 9},
        {"window": 13, "overlap": 9},
        {"tile": 16},
        {"window": 5, "tile": 24, "tile_overlap": 8},
    ):
        torch.testing.assert_close(decode(**options), whole, rtol=0, atol=1e-10, msg=str(options))


class WindowMeanDecoder(torch.nn.Module):
    """Each window predicts one constant, the mean of its latent frames: the blend of the
    windows is then all a decode is."""

    def forward(self, x_t, z0, logsnr):
        return z0.mean().expand_as(x_t)


def test_decode_windows_crossfade_without_seams():
    # latent frames 0.1 f: windows of 9 pixel frames (3 latent) start every 4 pixel frames and
    # their constants rise by 0.1 each, a mean slope of 0.025 per frame. Crossfaded by the ramps
    # over the 5 shared frames, no frame steps more than that slope (measured: exactly it, 10%
    # kept for float error); with flat weights each window enters at half the weight at once, a
    # seam of 0.1 / 2 = 0.05 per entering window.
    ul = UnifiedLatents(TINY).eval()
    ul.decoder = WindowMeanDecoder()
    z0 = (0.1 * torch.arange(9.0)).view(1, 1, 9, 1, 1).expand(1, 8, 9, 1, 1)
    frames = ul.decode(z0, steps=1, window=9)[0, 0, :, 0, 0]
    steps = frames.diff().abs()
    assert steps.max() <= 1.1 * 0.1 / 4, steps
    assert frames[-1] - frames[0] == pytest.approx(0.6, abs=1e-6)  # windows 0.1 to 0.7


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an op returns while active."""

    numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.numel = max([self.numel, *sizes])
        return out


@pytest.mark.parametrize("method", METHODS)
def test_windowed_sampling_holds_one_window_not_the_clip(method):
    # the methods' history (dpmpp-2m's previous predictions, heun's predictor) is kept per frame
    ul = UnifiedLatents(TINY).eval()
    ul.decoder = PerFrameDecoder()
    z0 = _z0(9, 4, 6)  # 33 x 32 x 48 pixels, windows of 9 frames
    latents, windows = zip(*decode_windows(z0.shape[2:], *COMPRESSION, window=9))
    x = torch.randn(1, 3, 33, 32, 48)
    with LargestTensor() as largest:
        sample_windows(
            method,
            lambda x_t, logsnr, k: ul.decoder(x_t, z0[(..., *latents[k])], logsnr),
            list(windows),
            x,
            to_data(logsnr_grid(ul.pixel_schedule, 2)),
        )
    assert largest.numel == 3 * 9 * 32 * 48  # a window's prediction and accumulator (the clip: 33)


def test_windows_cover_the_clip_and_bound_the_decoder_input(tiny_ul):
    windows = decode_windows((9, 4, 6), *COMPRESSION, window=13, overlap=5, tile=16, tile_overlap=8)
    covered = torch.zeros(33, 32, 48)
    for latent, (pixel, weights) in windows:
        sizes = [s.stop - s.start for s in latent]
        weights = weights[0][:, None, None] * weights[1][:, None] * weights[2]
        assert tuple(tiny_ul.pixel_shape(*sizes)[1:]) == weights.shape == (13, 16, 16)
        assert [s.start for s in pixel] == [
            4 * latent[0].start,
            8 * latent[1].start,
            8 * latent[2].start,
        ]
        covered[pixel] += weights.float()
    assert covered.min() > 0
    seen = []
    hook = tiny_ul.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    try:
        tiny_ul.decode(_z0(9, 4, 6), steps=1, window=13, overlap=5, tile=16, tile_overlap=8)
    finally:
        hook.remove()
    assert len(seen) == len(windows) == 4 * 3 * 5 and {s[2:] for s in seen} == {(13, 16, 16)}


def test_default_overlaps_are_at_least_half_the_window():
    # pixel frames / columns two neighbours share, by default: at least half the window (the seam
    # test's condition), except a 5-frame window, whose windows can share 1 frame at most
    for window, shared in ((5, 1), (9, 5), (17, 9), (33, 17)):
        pixels = [p[0] for _, (p, _) in decode_windows((65, 1, 1), *COMPRESSION, window=window)]
        assert {a.stop - b.start for a, b in zip(pixels, pixels[1:])} == {shared}, window
    for tile, shared in ((16, 8), (24, 16), (32, 16)):
        pixels = [p[2] for _, (p, _) in decode_windows((1, 1, 16), *COMPRESSION, tile=tile)]
        assert {a.stop - b.start for a, b in zip(pixels, pixels[1:])} == {shared}, tile


def test_decode_window_errors_name_the_fix(tiny_ul):
    z0 = _z0(5)
    with pytest.raises(ValueError, match="window=8: .*1 \\+ 4k frames, at least 5; use 5 or 9"):
        tiny_ul.decode(z0, steps=1, window=8)
    with pytest.raises(
        ValueError, match="tile=12: .*multiple of 8 pixels, at least 8; use 8 or 16"
    ):
        tiny_ul.decode(z0, steps=1, tile=12)
    with pytest.raises(ValueError, match="overlap=9 for window=9 frames.*fewer than the window"):
        tiny_ul.decode(z0, steps=1, window=9, overlap=9)


def test_multidiffusion_has_no_seams_on_a_gaussian_process():
    """Data: a smooth stationary Gaussian process over 41 frames. Each window's denoiser is the
    exact posterior mean given only its own 13 frames, a network with a limited context. Blended
    inside every step (sample_windows) over overlaps of at least half the window (the decoder's
    default), the frame-to-frame difference across window edges is no larger than inside the
    windows (within 2 standard errors over the 4000 samples); windows sampled apart and cut
    afterwards are not (the test's control).

    Measured, mean |x_{f+1} - x_f| at the 10 edge pairs / at the 30 others: 0.2279 / 0.2296
    (0.992; 0.991-0.997 over noise seeds 0-5; linear ramps 0.995-1.001). With overlaps of 6 of
    13 frames, a frame between two overlaps is one window's alone and rougher than the blended
    ones, which average two context-limited predictions: edges / inside 1.004-1.016 with these
    raised-cosine ramps, 1.032-1.045 with the linear ones before (entering at weight 1/7).
    """
    frames, size, overlap, batch = 41, 13, 7, 4000
    i = torch.arange(frames, dtype=torch.float64)
    cov = torch.exp(-((i[:, None] - i) ** 2) / 18) + 1e-4 * torch.eye(frames, dtype=torch.float64)

    def posterior_mean(c):  # E[x | z] = a C (a^2 C + s^2 I)^-1 z for x ~ N(0, C)
        def denoise(z, logsnr):
            a, s = alpha_sigma(logsnr[0])
            eye = torch.eye(len(c), dtype=c.dtype)
            return (a * c @ torch.linalg.solve(a**2 * c + s**2 * eye, z[:, 0].T)).T[:, None]

        return denoise

    starts = window_starts(frames, size, overlap)
    windows = [
        ((slice(a, a + size),), (ramp_weights(size, overlap, a > 0, a + size < frames),))
        for a in starts
    ]
    local = [posterior_mean(cov[a : a + size, a : a + size]) for a in starts]
    grid = to_data(logsnr_grid(LinearLogSNR(10.0, -10.0), 40))
    g = torch.Generator().manual_seed(0)

    def noise(z):
        return torch.randn(z.shape, generator=g, dtype=z.dtype)

    def start(length):
        return noise(torch.zeros(batch, 1, length, dtype=torch.float64))

    def sample(denoiser, length):
        return sample_ddpm(denoiser, start(length), grid, noise)[:, 0]

    def steps(x):  # |x_{f+1} - x_f|, batch x frame pairs
        return (x[:, 1:] - x[:, :-1]).abs()

    blended = sample_windows(
        "ddpm", lambda z, lam, k: local[k](z, lam), windows, start(frames), grid, noise
    )
    blended = steps(blended[:, 0])
    edges = sorted({a - 1 for a in starts[1:]} | {a + size - 1 for a in starts[:-1]})
    inside = [f for f in range(frames - 1) if f not in edges]
    excess = blended[:, edges].mean(1) - blended[:, inside].mean(1)  # per sample
    assert excess.mean() <= 2 * excess.std() / batch**0.5, (excess.mean(), excess.std())
    # control: each window sampled on its own and the clip cut in the middle of each overlap
    apart = [sample(local[k], size) for k in range(len(starts))]
    cuts = [0] + [(a + starts[k] + size) // 2 for k, a in enumerate(starts[1:])] + [frames]
    stitched = steps(
        torch.cat([apart[k][:, cuts[k] - a : cuts[k + 1] - a] for k, a in enumerate(starts)], 1)
    ).mean(0)
    seams = [c - 1 for c in cuts[1:-1]]
    smooth = [f for f in range(frames - 1) if f not in seams]
    assert stitched[seams].mean() > 2 * stitched[smooth].mean()


class LocalPrior(torch.nn.Module):
    """A prior that predicts each latent element from itself: local in time."""

    def forward(self, z, logsnr):
        return torch.tanh(z) * torch.sigmoid(logsnr).view(-1, 1, 1, 1, 1)


def test_windowed_rate_is_the_whole_clips_for_a_local_prior():
    from ulvideo.evaluate.reconstruction import reconstruction_metrics

    torch.manual_seed(0)
    ul = UnifiedLatents(TINY).eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 8, 9, 2, 2, generator=g)
    t, eps = torch.tensor([0.3, 0.8]), torch.randn(z.shape, generator=g)
    prior = ul.prior
    with torch.no_grad():
        whole = ul.rate(z, t=t, eps=eps)
        chunked = ul.rate(z, 13, t=t, eps=eps)  # 4 + 4 + 1 latent frames, each from frame 0
        assert ((chunked - whole) / whole).abs().max() > 1e-3  # the tiny prior reads across time
        # ul is this test's own model: plain assignment (pytest 9's monkeypatch undoes a set
        # child module with delattr, which nn.Module refuses)
        ul.prior = LocalPrior()
        for window in (5, 9, 13, 33):
            torch.testing.assert_close(ul.rate(z, window, t=t, eps=eps), ul.rate(z, t=t, eps=eps))
    ul.prior = prior
    seen = []
    hook = prior.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    metrics = reconstruction_metrics(ul, _video(21), 1, bits_draws=2, window=9)
    hook.remove()
    assert seen == [3, 3] * 2 and metrics["bits_per_pixel"] > 0  # 6 latent frames, 3 at a time


# ---------------------------------------------------------------- long generation


@pytest.fixture(scope="module")
def long_pipeline(tiny_ul):
    from ulvideo.pipeline import Pipeline

    torch.manual_seed(0)
    base_cfg = base_preset("tiny", latent_channels=TINY.latent_channels, num_classes=4)
    return Pipeline(tiny_ul, build_base(base_cfg).eval(), base_cfg)


def test_each_window_continues_the_last_latent_frames(long_pipeline, monkeypatch):
    import ulvideo.sample as sample

    calls = []
    original = sample.sample_z0

    def recording(ul, base, shape, sampling, **kw):
        out = original(ul, base, shape, sampling, **kw)
        calls.append((kw["context_latents"], out))
        return out

    monkeypatch.setattr(sample, "sample_z0", recording)
    sampling = sample.SamplingConfig(base_steps=2, batch_size=1)
    ul, base = long_pipeline.autoencoder, long_pipeline.base
    inputs = []  # what the base model sees: its input's first two frames, context_frames
    hook = base.register_forward_pre_hook(
        lambda m, a, kw: inputs.append((a[0][:, :, :2], kw["context_frames"])), with_kwargs=True
    )
    context = torch.randn(1, 8, 1, 2, 2)
    try:
        z0 = sample.sample_long_z0(
            ul, base, (8, 8, 2, 2), sampling, 3, 2, context_latents=context,
            rng=StackedRandomGenerator("cpu", 0, [0]),
        )  # fmt: skip
    finally:
        hook.remove()
    assert z0.shape == (1, 8, 8, 2, 2)
    assert [out.shape[2] for _, out in calls] == [3, 3, 3, 3, 3, 3]  # 3 + 5 x 1 new frame
    assert calls[0][0] is context
    for k, (given, out) in enumerate(calls[1:], start=1):
        torch.testing.assert_close(given, z0[:, :, k : k + 2], rtol=0, atol=0)
        torch.testing.assert_close(out[:, :, 2], z0[:, :, k + 2], rtol=0, atol=0)
        for seen, context_frames in inputs[2 * k : 2 * k + 2]:  # base_steps calls per window
            assert context_frames == 2
            torch.testing.assert_close(seen, given, rtol=0, atol=0)


def test_long_generation_is_windowed_and_batch_independent(long_pipeline):
    from ulvideo.sample import SamplingConfig

    seen = []
    hook = long_pipeline.base.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[2]))
    sampling = SamplingConfig(base_steps=2, decoder_steps=2, window=9, batch_size=2)
    try:
        videos = long_pipeline.generate(2, 21, 16, sampling, labels=torch.tensor([1, 2]))
    finally:
        hook.remove()
    assert videos.shape == (2, 3, 21, 16, 16) and max(seen) == 3  # 3 of the 6 latent frames
    alone = replace(sampling, batch_size=1)
    one = long_pipeline.generate(
        1, 21, 16, alone, labels=torch.tensor([2]), indices=torch.tensor([1])
    )
    torch.testing.assert_close(one, videos[1:], rtol=0, atol=1e-5)


def test_long_generation_continues_a_given_context(long_pipeline):
    from ulvideo.sample import SamplingConfig

    context = _video(5)
    sampling = SamplingConfig(base_steps=1, decoder_steps=1, window=9, batch_size=1)
    video = long_pipeline.generate(1, 21, 16, sampling, context=context, labels=torch.tensor([3]))
    assert video.shape == (1, 3, 21, 16, 16)
    torch.testing.assert_close(video[:, :, :5], context, rtol=0, atol=0)


def test_long_generation_errors_and_cli(long_pipeline, tmp_path):
    import av

    from ulvideo.cli import main
    from ulvideo.pipeline import Pipeline
    from ulvideo.sample import SamplingConfig

    sampling = SamplingConfig(base_steps=1, decoder_steps=1, window=9, window_context=9)
    with pytest.raises(ValueError, match="window_context=9 frames fewer than the window"):
        long_pipeline.generate(1, 17, 16, sampling)
    # the window and its context are pixel frames, checked before any sampling
    with pytest.raises(ValueError, match="window=8: .*1 \\+ 4k frames, at least 5; use 5 or 9"):
        long_pipeline.generate(1, 17, 16, replace(sampling, window=8))
    with pytest.raises(ValueError, match="window_context=4: .*1 \\+ 4k frames.*use 1 or 5"):
        long_pipeline.generate(1, 17, 16, replace(sampling, window_context=4))
    no_context = base_preset("tiny", latent_channels=8, context=False)
    pipeline = Pipeline(long_pipeline.autoencoder, build_base(no_context), no_context)
    with pytest.raises(ValueError, match="needs a base model trained with context"):
        pipeline.generate(1, 17, 16, SamplingConfig(base_steps=1, decoder_steps=1, window=9))
    path = long_pipeline.save_pretrained(tmp_path / "export")
    assert main(["sample", "--checkpoint", str(path), "--num", "1", "--frames", "25", "--window",
                 "9", "--base_steps", "1", "--decoder_steps", "1", "--resolution", "16",
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    with av.open(str(tmp_path / "s" / "sample_0000.mp4")) as f:
        assert sum(1 for _ in f.decode(video=0)) == 25

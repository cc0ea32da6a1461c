"""Long and large videos: causal streaming encode (issue 13)."""

import pytest
import torch

from ulvideo import UnifiedLatents
from ulvideo.models import autoencoder_preset
from ulvideo.nn import Conv3d

TINY = autoencoder_preset("tiny")


@pytest.fixture(scope="module")
def tiny_ul():
    torch.manual_seed(0)
    return UnifiedLatents(TINY).eval()


def _video(frames, height=16, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


# ---------------------------------------------------------------- causal streaming encode


@pytest.mark.parametrize("frames", [1, 5, 17, 65])
@pytest.mark.parametrize("window", [4, 8, 12, 64])
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
        ValueError, match="window=6 frames.*multiple of temporal_downsample=4, e.g. 4"
    ):
        tiny_ul.encode(video, window=6)
    with pytest.raises(ValueError, match="chunk 1 has 3 frames.*multiple of temporal_downsample=4"):
        list(tiny_ul.encoder.stream([video[:, :, :5], video[:, :, 5:8]]))


def test_encoder_memory_is_bounded_by_the_window(tiny_ul):
    # every conv of a streamed 65-frame encode sees at most window + 1 frames + its 2 past frames
    longest = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: longest.append(args[0].shape[2]))
        for m in tiny_ul.encoder.modules()
        if isinstance(m, Conv3d)
    ]
    try:
        with torch.no_grad():
            tiny_ul.encode(_video(65), window=8)
    finally:
        for hook in hooks:
            hook.remove()
    assert max(longest) == 9  # the first chunk, 1 + 8 frames; the cache is added inside


def test_pipeline_and_cli_stream_the_encoder(tiny_ul, tmp_path):
    from safetensors.torch import load_file

    from ulvideo.cli import main
    from ulvideo.media import write_mp4
    from ulvideo.pipeline import Pipeline

    pipeline = Pipeline(tiny_ul)
    video = _video(13)
    torch.testing.assert_close(
        pipeline.encode(video, window=4), tiny_ul.encode(video), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        pipeline.reconstruct(video, steps=2, window=4), pipeline.reconstruct(video, steps=2),
        rtol=0, atol=1e-4,
    )  # fmt: skip
    path = pipeline.save_pretrained(tmp_path / "export")
    write_mp4(video[0], tmp_path / "in.mp4")
    outs = {}
    for window in (None, 4):
        out = tmp_path / f"z{window}.safetensors"
        flag = [] if window is None else ["--window", str(window)]
        assert main(["encode", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                     "--frames", "13", "--resolution", "16", "--out", str(out), *flag]) == 0  # fmt: skip
        outs[window] = load_file(out)["z_clean"]
    assert outs[4].shape == (1, 8, 4, 2, 2)
    torch.testing.assert_close(outs[4], outs[None], rtol=0, atol=1e-5)
    assert main(["encode", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "13", "--out", str(tmp_path / "bad"), "--window", "6"]) == 2  # fmt: skip

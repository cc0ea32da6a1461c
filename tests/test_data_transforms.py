"""Resizing, cropping, flipping and the value range of clip transforms."""

import numpy as np
import pytest
import torch

from ulvideo.data import (
    center_crop,
    clip_transform,
    item_rng,
    random_crop,
    random_flip,
    resize_short_side,
)
from ulvideo.data.transforms import as_frames, to_video_tensor


def test_uint8_frames_map_linearly_onto_minus_one_to_one():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    video = to_video_tensor(frames)
    assert video.shape == (3, 1, 16, 16) and video.dtype == torch.float32
    assert video[0, 0, 0, 0] == -1 and video[0, 0, -1, -1] == 1
    torch.testing.assert_close(video[1].flatten(), torch.arange(256.0) / 127.5 - 1)
    with pytest.raises(ValueError, match=r"uint8 frames of shape \(T, H, W, 3\)"):
        to_video_tensor(frames.astype(np.float32))


@pytest.mark.parametrize(("height", "width", "expected"), [(36, 64, (32, 57)), (90, 40, (72, 32))])
def test_resize_short_side_keeps_the_aspect_ratio(height, width, expected):
    frames = torch.rand(2, 3, height, width) * 2 - 1
    resized = resize_short_side(frames, 32)
    assert resized.shape == (2, 3, *expected)
    assert resized.min() >= -1 and resized.max() <= 1
    # Area-preserving filter: the mean is kept up to edge effects.
    torch.testing.assert_close(resized.mean(), frames.mean(), atol=0.02, rtol=0)


def test_resize_short_side_of_a_linear_ramp_stays_a_ramp():
    # Horizontal ramp over 128 columns, downsampled 2x with an antialiasing triangle filter:
    # interior column j averages source columns 2j - 1 .. 2j + 2 symmetrically.
    ramp = torch.linspace(-1, 1, 128).expand(1, 3, 64, 128)
    resized = resize_short_side(ramp, 32)
    assert resized.shape == (1, 3, 32, 64)
    expected = (ramp[0, 0, 0, 0::2] + ramp[0, 0, 0, 1::2]) / 2
    torch.testing.assert_close(resized[0, 0, 5, 1:-1], expected[1:-1], atol=1e-5, rtol=0)


def test_uint8_resize_agrees_with_float_resize():
    frames = np.random.default_rng(0).integers(0, 256, (3, 45, 80, 3), dtype=np.uint8)
    as_uint8 = resize_short_side(as_frames(frames), 32).float()
    as_float = resize_short_side(as_frames(frames).float(), 32)
    assert as_uint8.shape == (3, 3, 32, 57)
    assert (as_uint8 - as_float).abs().max() <= 1.01  # uint8 rounding only


def test_center_crop_takes_the_middle_window():
    video = torch.arange(10 * 14.0).reshape(1, 1, 10, 14)
    torch.testing.assert_close(center_crop(video, 6), video[..., 2:8, 4:10])


def test_random_crop_and_flip_cover_every_offset_and_both_orientations():
    video = torch.arange(8 * 12.0).reshape(1, 1, 8, 12)
    seen = set()
    for index in range(400):
        rng = item_rng(0, 0, index)
        crop = random_flip(random_crop(video, 8, rng), rng)
        flipped = bool(crop[0, 0, 0, 0] > crop[0, 0, 0, -1])
        left = int(crop[0, 0, 0].min())  # the smallest column of the window
        window = video[..., left : left + 8]
        torch.testing.assert_close(crop, window.flip(-1) if flipped else window)
        seen.add((left, flipped))
    assert seen == {(left, flip) for left in range(5) for flip in (False, True)}


def test_item_rng_is_a_function_of_seed_epoch_and_index():
    draw = [item_rng(s, e, i).integers(1 << 30) for s, e, i in [(0, 0, 0), (0, 0, 0), (1, 0, 0)]]
    assert draw[0] == draw[1] != draw[2]
    assert item_rng(0, 1, 0).integers(1 << 30) != item_rng(0, 0, 1).integers(1 << 30)


def test_clip_transform_evaluation_and_training():
    frames = np.random.default_rng(0).integers(0, 256, (5, 36, 64, 3), dtype=np.uint8)
    evaluation = clip_transform(frames, 32)
    assert evaluation.shape == (3, 5, 32, 32) and evaluation.dtype == torch.float32
    assert evaluation.min() >= -1 and evaluation.max() <= 1
    # Reference in float: resize the 36 x 64 frames to 32 x 57, take columns 12 .. 43.
    full = torch.nn.functional.interpolate(
        as_frames(frames).float(), size=(32, 57), mode="bilinear", antialias=True
    )
    reference = full[..., 12:44].permute(1, 0, 2, 3) / 127.5 - 1
    torch.testing.assert_close(evaluation, reference, atol=1.01 / 127.5, rtol=0)  # one uint8 level
    full = full.permute(1, 0, 2, 3) / 127.5 - 1
    for index in range(10):
        training = clip_transform(frames, 32, item_rng(0, 0, index), crop="random", flip=True)
        windows = [full[..., left : left + 32] for left in range(full.shape[-1] - 31)]
        closest = min(
            min((training - w).abs().max(), (training - w.flip(-1)).abs().max()) for w in windows
        )
        assert closest <= 1.01 / 127.5
    with pytest.raises(ValueError, match="unknown crop 'middle'"):
        clip_transform(frames, 32, crop="middle")

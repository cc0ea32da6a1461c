"""The built-in moving-digits demo data and the dataset registry."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from ulvideo.data import DATASETS, MovingDigits, build_dataset
from ulvideo.data.demo import bounce, digit_images


def test_demo_videos_are_deterministic_given_the_seed():
    first, again, other = MovingDigits(seed=0), MovingDigits(seed=0), MovingDigits(seed=1)
    for index in (0, 7, 1999):
        video, label = first[index]
        video_again, label_again = again[index]
        torch.testing.assert_close(video, video_again, rtol=0, atol=0)
        assert label == label_again
    assert not all(torch.equal(first[i][0], other[i][0]) for i in range(3))
    assert not torch.equal(first[0][0], MovingDigits(split="test")[0][0])


def test_demo_video_format_and_defaults():
    train, test = MovingDigits(), MovingDigits(split="test", frames=5, resolution=64)
    assert (len(train), len(test), train.num_classes) == (2000, 200, 10)
    video, label = train[3]
    assert video.shape == (3, 17, 32, 32) and video.dtype == torch.float32
    assert video.min() == -1 and 0.9 < video.max() <= 1  # black background, bright strokes
    assert torch.equal(video[0], video[1]) and torch.equal(video[0], video[2])  # grey
    assert 0 <= label <= 9
    assert test[0][0].shape == (3, 5, 64, 64)
    with pytest.raises(IndexError):
        train[2000]
    batch, labels = next(iter(DataLoader(test, batch_size=4)))
    assert batch.shape == (4, 3, 5, 64, 64) and labels.dtype == torch.int64


def test_one_digit_moves_without_changing_its_ink():
    # The digit always lies fully inside the canvas, so every frame holds the same total ink,
    # while its centre of mass travels (at least 1 pixel per frame at resolution 32).
    dataset = MovingDigits(frames=17, resolution=32, size=20)
    grid = torch.arange(32.0)
    for index in range(20):
        ink = (dataset[index][0][0] + 1) / 2  # T x H x W in [0, 1]
        totals = ink.sum(dim=(1, 2))
        torch.testing.assert_close(totals, totals[0].expand(17))
        rows = (ink.sum(dim=2) * grid).sum(1) / totals
        cols = (ink.sum(dim=1) * grid).sum(1) / totals
        assert torch.hypot(rows - rows[0], cols - cols[0]).max() > 2


def test_labels_name_the_digit_shown():
    dataset = MovingDigits(split="test", frames=1, resolution=16, size=50)
    images, labels = digit_images("test", 8)  # at resolution 16 digits keep their 8 px size
    for index in range(50):
        frame = ((dataset[index][0][0, 0] + 1) / 2).numpy()
        windows = np.lib.stride_tricks.sliding_window_view(frame, (8, 8))  # 9 x 9 x 8 x 8
        error = np.abs(windows[:, :, None] - images).max(axis=(-2, -1))  # 9 x 9 x images
        shown = np.nonzero(error < 1e-6)[2]
        assert len(shown) and {int(labels[i]) for i in shown} == {dataset[index][1]}


def test_train_and_test_use_disjoint_real_digits():
    train, train_labels = digit_images("train", 8)
    test, test_labels = digit_images("test", 8)
    digits = load_digits()
    assert len(train) + len(test) == len(digits.images) == 1797
    assert set(train_labels) == set(test_labels) == set(range(10))
    np.testing.assert_allclose(test[0], digits.images[0] / 16, atol=1e-6)
    train_keys = {image.tobytes() for image in train}
    assert not any(image.tobytes() in train_keys for image in test)


def test_bounce_matches_a_step_by_step_reflection():
    rng = np.random.default_rng(0)
    start, velocity, limit = rng.uniform(0, 10, (5, 2)), rng.uniform(-4, 4, (5, 2)), 10
    closed_form = bounce(start, velocity, np.arange(30), limit)
    position, step = start.copy(), velocity.copy()
    for t in range(30):
        np.testing.assert_allclose(closed_form[:, t], position, atol=1e-9)
        position = position + step
        for _ in range(2):  # reflect off 0 and off limit
            low, high = position < 0, position > limit
            position = np.where(low, -position, np.where(high, 2 * limit - position, position))
            step = np.where(low | high, -step, step)


def test_registry_builds_each_dataset_and_rejects_bad_requests(tmp_path):
    assert DATASETS == ("demo", "demo_images", "kinetics600", "imagenet", "videos")
    from ulvideo.train import config

    assert config.DATASETS is DATASETS  # one list: training validates against the registry's
    demo = build_dataset("demo", None, "test", 5, 16, seed=2)
    assert (
        isinstance(demo, MovingDigits) and len(demo) == 200 and demo[0][0].shape == (3, 5, 16, 16)
    )
    with pytest.raises(ValueError, match="unknown dataset 'ucf101'"):
        build_dataset("ucf101", tmp_path, "train", 17, 128)
    with pytest.raises(ValueError, match="'kinetics600' needs root"):
        build_dataset("kinetics600", None, "train", 17, 128)
    images = build_dataset("demo_images", None, "test", 1, 16, seed=2)  # the clips' first frames
    torch.testing.assert_close(images[3][0], demo[3][0][:, :1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="'demo_images' holds images, i.e. 1-frame videos"):
        build_dataset("demo_images", None, "test", 5, 16)
    with pytest.raises(ValueError, match="unknown demo split 'val'"):
        MovingDigits(split="val")
    with pytest.raises(ValueError, match="resolution >= 16"):
        MovingDigits(resolution=8)

"""The demo's digit classifier on real moving-digit clips whose digit images it never saw."""

import pytest
import torch

from ulvideo.data.demo import MovingDigits
from ulvideo.evaluate.digits import class_accuracy, classify_videos, digit_crops


def test_digit_crops_find_the_digit_wherever_it_is():
    digit = torch.rand(16, 16)
    video = -torch.ones(1, 3, 2, 32, 32)
    video[0, :, 0, 3:19, 10:26] = digit * 2 - 1
    video[0, :, 1, 16:32, 0:16] = digit * 2 - 1
    crops = digit_crops(video, 16)
    expected = torch.nn.functional.avg_pool2d(digit[None, None], 2).flatten()
    torch.testing.assert_close(crops[0, 0], expected)
    torch.testing.assert_close(crops[0, 1], expected)


@pytest.mark.slow
def test_classifier_names_the_digit_of_real_test_clips():
    test = MovingDigits("test", frames=9, resolution=32, size=100)
    videos = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    assert class_accuracy(videos, labels, digit_size=16) >= 0.9
    assert class_accuracy(videos, labels.roll(1), digit_size=16) <= 0.2
    assert len(set(classify_videos(videos, 16).tolist())) == 10

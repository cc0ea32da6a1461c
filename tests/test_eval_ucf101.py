"""The UCF-101 FVD protocol's real clips: train list or whole folder, spread over all classes."""

import numpy as np
import pytest
import torch
from test_data_video import clip_id, start_and_flip
from test_data_video_folders import ucf_tree

from ulvideo.evaluate.ucf101 import evenly_spread, main, ucf101_real_clips


def test_evenly_spread_reaches_both_ends():
    assert evenly_spread(3, 3).tolist() == [0, 1, 2]
    assert evenly_spread(2, 9).tolist() == [0, 8]
    assert evenly_spread(4, 10).tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="cannot take 7 clips from a real set of 6 videos"):
        evenly_spread(7, 6)


def test_real_clips_of_the_train_list_and_of_the_whole_folder(tmp_path):
    videos, lists = ucf_tree(tmp_path, listed_but_missing=False)
    out = tmp_path / "real.npz"
    args = ["--data_root", str(videos), "--resolution", "32", "--out", str(out)]
    summary = main([*args, "--split_file", str(lists / "trainlist01.txt"), "--num", "3"])
    assert summary == {"out": str(out), "clips": 3, "classes": 3}
    with np.load(out) as saved:
        real, labels = saved["videos"], saved["labels"]
    assert real.dtype == np.uint8 and real.shape == (3, 16, 32, 32, 3)
    assert labels.tolist() == [0, 1, 2]
    dataset = ucf101_real_clips(videos, lists / "trainlist01.txt", resolution=32)
    for index in range(3):
        video = torch.from_numpy(real[index]).permute(3, 0, 1, 2).float() / 127.5 - 1
        torch.testing.assert_close(video, dataset[index][0], rtol=0, atol=0.51 / 127.5)
        assert clip_id(video) == 2 * index + 1  # the g08 (train) clips
        assert not start_and_flip(video)[1]  # never mirrored
    main([*args, "--num", "6"])  # no split file: every video, train and test
    with np.load(out) as saved:
        assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 2]
        assert sorted(clip_id(torch.from_numpy(v).permute(3, 0, 1, 2) / 127.5 - 1)
                      for v in saved["videos"]) == [0, 1, 2, 3, 4, 5]  # fmt: skip

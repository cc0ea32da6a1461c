"""The Kinetics-600 frame prediction protocol on a small clip dataset, with cheap features;
single process and 2 CPU processes under accelerate."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from launch import launch
from test_eval_fvd import MustNotRun, pooled_features

from ulvideo.evaluate.fvd import PROTOCOLS, compute_fvd, video_features
from ulvideo.evaluate.k600 import frame_prediction_features, frame_prediction_fvd

REPO = Path(__file__).resolve().parents[1]


def clip_dataset(
    count: int = 6, frames: int = 17, size: int = 32
) -> list[tuple[torch.Tensor, int]]:
    """(video 3 x 17 x 32 x 32 in [-1, 1], label = index): a square drifting over per-clip noise."""
    generator = torch.Generator().manual_seed(0)
    clips = []
    for index in range(count):
        video = torch.rand(3, frames, size, size, generator=generator) * 0.5 - 1
        for t in range(frames):
            x = (2 * index + t) % (size - 8)
            video[:, t, 4 * index % 24 : 4 * index % 24 + 8, x : x + 8] = 0.8
        clips.append((video, index))
    return clips


def copy_last_context_frame(
    context: torch.Tensor, num_frames: int, labels: torch.Tensor, sample_ids: torch.Tensor
) -> torch.Tensor:
    return torch.cat(
        [context, context[:, :, -1:].expand(-1, -1, num_frames - context.shape[2], -1, -1)], 2
    )


def shifted_copy(
    context: torch.Tensor, num_frames: int, labels: torch.Tensor, sample_ids: torch.Tensor
) -> torch.Tensor:
    """Label- and sample-dependent: context, then its last frame rolled by the label, plus noise
    seeded by the sample id alone (as a per-sample seeded sampler draws it)."""
    last = context[:, :, -1:]
    rolled = torch.stack([frame.roll(int(label), dims=-1) for frame, label in zip(last, labels)])
    future = rolled.expand(-1, -1, num_frames - context.shape[2], -1, -1)
    noise = torch.stack(
        [
            torch.randn(future.shape[1:], generator=torch.Generator().manual_seed(int(i)))
            for i in sample_ids
        ]
    )
    return torch.cat([context, (future + 0.1 * noise).clamp(-1, 1)], 2)


def test_an_oracle_scores_zero_and_copying_the_last_frame_does_not(tmp_path):
    dataset = clip_dataset()
    calls = []

    def oracle(context, num_frames, labels, sample_ids):
        calls.append((context.shape, num_frames, sample_ids.tolist()))
        real = torch.stack([dataset[int(label)][0] for label in labels])
        assert torch.equal(context, real[:, :, :5])
        return real

    report = frame_prediction_fvd(
        oracle,
        dataset,
        num_samples=6,
        groups=1,
        batch_size=4,
        i3d=pooled_features(),
        report_path=tmp_path / "r.json",
    )
    assert calls == [((4, 3, 5, 32, 32), 17, [0, 1, 2, 3]), ((2, 3, 5, 32, 32), 17, [4, 5])]
    assert report["fvd"] == pytest.approx(0, abs=1e-9)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["num_samples"] == 6 and report["context_frames"] == 5
    assert report["protocol"]["name"] == "magvit-k600"  # the default: MAGVIT's 64 px path
    assert report["protocol"]["sizes"] == [64, 224] and report["protocol"]["num_frames"] == 16
    assert report["protocol_deviations"] == [
        "6 samples, the protocol fixes 50000",
        "1 groups, the protocol fixes 4",
    ]

    copied = frame_prediction_fvd(
        copy_last_context_frame, dataset, num_samples=6, i3d=pooled_features()
    )
    assert copied["fvd"] > 0.05


def test_features_follow_dataset_order_cycling_past_its_end():
    dataset = clip_dataset()
    real, fake = frame_prediction_features(
        shifted_copy, dataset, num_samples=10, groups=2, batch_size=4, i3d=pooled_features()
    )
    videos = torch.stack([dataset[i % 6][0] for i in range(10)])
    torch.testing.assert_close(
        real, video_features(videos, pooled_features(), "magvit-k600"), rtol=0, atol=1e-12
    )
    expected = [  # group g generates sample ids 10 g .. 10 g + 9
        video_features(
            shifted_copy(videos[:, :, :5], 17, torch.arange(10) % 6, torch.arange(10) + 10 * g),
            pooled_features(),
            "magvit-k600",
        )
        for g in (0, 1)
    ]
    assert fake.shape == (20, 48)
    torch.testing.assert_close(fake, torch.cat(expected), rtol=0, atol=1e-12)


def test_sample_count_and_groups_default_to_the_protocols():
    small = replace(PROTOCOLS["magvit-k600"], num_samples=6, groups=2)
    report = frame_prediction_fvd(
        shifted_copy, clip_dataset(), protocol=small, i3d=pooled_features()
    )
    assert (
        report["num_samples"] == 6 and report["num_fake"] == 12 and len(report["fvd_groups"]) == 2
    )
    assert report["protocol_deviations"] == [
        "6 samples, the protocol fixes 50000",
        "2 groups, the protocol fixes 4",
    ]
    direct = frame_prediction_fvd(
        shifted_copy, clip_dataset(), 6, 2, protocol="tfgan", i3d=pooled_features()
    )
    assert direct["protocol"]["sizes"] == [224] and direct["fvd"] != report["fvd"]
    with pytest.raises(ValueError, match="'tfgan' fixes no sample count: pass num_samples"):
        frame_prediction_fvd(shifted_copy, clip_dataset(), protocol="tfgan", i3d=MustNotRun())


def test_protocol_errors_name_the_problem():
    dataset = clip_dataset()
    with pytest.raises(ValueError, match="whole clips, context frames included"):
        frame_prediction_fvd(lambda c, t, y, i: c, dataset, num_samples=2, i3d=pooled_features())
    with pytest.raises(ValueError, match=r"\(video 3 x T x H x W, label\) pairs"):
        frame_prediction_fvd(
            copy_last_context_frame, [v for v, _ in dataset], num_samples=2, i3d=pooled_features()
        )
    with pytest.raises(ValueError, match="clips have 12 frames"):
        frame_prediction_fvd(
            copy_last_context_frame, clip_dataset(frames=12), num_samples=2, i3d=pooled_features()
        )


def fvd_videos() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of 7 videos 3 x 16 x 32 x 32: 7 is not a multiple of 2 processes x batches of 2."""
    real = torch.stack([video[:, :16] for video, _ in clip_dataset(count=7)])
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    return real, (real + 0.3 * noise).clamp(-1, 1)


DISTRIBUTED_SCRIPT = """
import sys
import torch
from accelerate import Accelerator
sys.path.insert(0, {tests!r})
from test_eval_fvd import pooled_features
from test_eval_k600 import clip_dataset, shifted_copy
from test_eval_k600 import fvd_videos
from ulvideo.evaluate.fvd import compute_fvd, video_features
from ulvideo.evaluate.k600 import frame_prediction_features, frame_prediction_fvd

accelerator = Accelerator(cpu=True)
kwargs = dict(num_samples=7, groups=2, batch_size=2, accelerator=accelerator, i3d=pooled_features())
real, fake = frame_prediction_features(shifted_copy, clip_dataset(), **kwargs)
frame_prediction_fvd(shifted_copy, clip_dataset(), report_path={report!r}, **kwargs)
videos, other = fvd_videos()
features = video_features(iter(videos), pooled_features(), batch_size=2, accelerator=accelerator)
fvd = compute_fvd(videos, other, pooled_features(), batch_size=2, groups=1, accelerator=accelerator)
if accelerator.is_main_process:
    torch.save({{"real": real, "fake": fake, "world": accelerator.num_processes,
                "features": features, "fvd": fvd}}, {out!r})
accelerator.wait_for_everyone()
accelerator.end_training()  # tear the process group down: no rank exits while gloo still runs
"""


@pytest.mark.slow
def test_two_processes_gather_the_features_of_one_process_in_order(tmp_path):
    script = tmp_path / "run.py"
    out, report = tmp_path / "features.pt", tmp_path / "report.json"
    script.write_text(
        DISTRIBUTED_SCRIPT.format(tests=str(REPO / "tests"), report=str(report), out=str(out))
    )
    launch(script, timeout=300)

    distributed = torch.load(out)
    assert distributed["world"] == 2
    real, fake = frame_prediction_features(
        shifted_copy, clip_dataset(), num_samples=7, groups=2, batch_size=2, i3d=pooled_features()
    )
    assert distributed["real"].shape == (7, 48) and distributed["fake"].shape == (14, 48)
    torch.testing.assert_close(distributed["real"], real, rtol=0, atol=1e-12)
    torch.testing.assert_close(distributed["fake"], fake, rtol=0, atol=1e-12)
    single = frame_prediction_fvd(
        shifted_copy, clip_dataset(), num_samples=7, groups=2, batch_size=2, i3d=pooled_features()
    )
    written = json.loads(report.read_text())
    assert written["num_processes"] == 2
    assert written["fvd_groups"] == pytest.approx(single["fvd_groups"], rel=1e-9)
    # the FVD feature extraction: batches 0 and 2 on one process, 1 and 3 (of 1 video) on the
    # other, gathered in order: each of the 7 videos once, as one process extracts them
    videos, other = fvd_videos()
    features = video_features(videos, pooled_features(), batch_size=2)
    assert distributed["features"].shape == features.shape == (7, 48)
    assert torch.equal(distributed["features"], features)
    one_process = compute_fvd(videos, other, pooled_features(), batch_size=2, groups=1)
    assert distributed["fvd"]["num_real"] == distributed["fvd"]["num_fake"] == 7
    assert distributed["fvd"]["fvd"] == pytest.approx(one_process["fvd"], rel=1e-12)
    assert one_process["fvd"] > 0

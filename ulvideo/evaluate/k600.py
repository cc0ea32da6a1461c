"""Kinetics-600 frame prediction FVD (UL_METHOD §8): condition on 5 real frames, generate the rest,
and score the first 16 frames against the real clips under the `magvit-k600` FVD protocol by
default (ulvideo.evaluate.fvd): MAGVIT's 64x64-then-224x224 TF 1.x resize, 50,000 samples, mean ±
std over 4 groups.

The protocol is independent of how videos are generated. `generate(context, num_frames, labels,
sample_ids)` receives `B x 3 x 5 x H x W` real context frames in [-1, 1], the clip length T, the
class labels and each clip's sample index (`group * num_samples + i`), and returns the whole
`B x 3 x T x H x W` clip, its rendering of the context frames included. A sampler that seeds each
clip's noise from its sample index alone (ulvideo.sample.frame_predictor does) scores the same clips
on any number of processes. Any model can be scored the same way.

`ulvideo eval k600` (`main`) scores a stage-2 export, sampled with per-sample seeds:

    [accelerate launch -m] ulvideo eval k600 --checkpoint RUN/final --data_root K600

Distributed with accelerate (`accelerate launch`, pass the `Accelerator`): each process takes a
shard of the clips and the features are gathered in dataset order, `gather_for_metrics` dropping the
padding of the last batch, so the numbers do not depend on the number of processes.
"""

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..sample import SamplingConfig
from .frechet import FeatureStats
from .fvd import (
    PROTOCOLS,
    Protocol,
    default_i3d,
    embed,
    fvd_report,
    get_protocol,
    module_device,
    protocol_settings,
)

CONTEXT_FRAMES = 5
DEFAULT_PROTOCOL = "magvit-k600"
Generate = Callable[[Tensor, int, Tensor, Tensor], Tensor]


class IndexedClips(Dataset):
    """Sample i of the protocol: `(video, label, i)` of clip `i % len(dataset)`."""

    def __init__(self, dataset: Dataset, num_samples: int):
        self.dataset, self.num_samples = dataset, num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        item = self.dataset[i % len(self.dataset)]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError("the dataset must yield (video 3 x T x H x W, label) pairs")
        return item[0], item[1], i


def check_clips(video: Tensor, context_frames: int, num_frames: int) -> None:
    if video.dim() != 5 or video.shape[1] != 3:
        raise ValueError(
            "the dataset must yield (video 3 x T x H x W, label) pairs, got video batches "
            f"{list(video.shape)}"
        )
    if video.shape[2] < num_frames or video.shape[2] <= context_frames:
        raise ValueError(
            f"clips have {video.shape[2]} frames; the protocol needs at least {num_frames} to "
            f"score and more than the {context_frames} context frames"
        )


def frame_prediction_features(
    generate: Generate,
    dataset: Dataset,
    num_samples: int | None = None,
    groups: int | None = None,
    batch_size: int = 16,
    accelerator=None,
    context_frames: int = CONTEXT_FRAMES,
    protocol: Protocol | str = DEFAULT_PROTOCOL,
    i3d: nn.Module | None = None,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """(real `N x D`, generated `groups * N x D`) float64 features in dataset order, on every
    process; `num_samples` and `groups` default to the protocol's.

    Sample i is clip `i % len(dataset)`; each group generates from the same N clips again, the
    clips of group g getting sample ids `g * N + i`.
    """
    protocol = get_protocol(protocol)
    num_samples = protocol.num_samples if num_samples is None else num_samples
    groups = protocol.groups if groups is None else groups
    if num_samples is None:
        raise ValueError(f"protocol {protocol.name!r} fixes no sample count: pass num_samples")
    if num_samples < 2 or groups < 1:
        raise ValueError(f"need num_samples >= 2 and groups >= 1, got {num_samples} and {groups}")
    if len(dataset) == 0:
        raise ValueError("the dataset of real clips is empty")
    i3d = default_i3d() if i3d is None else i3d
    loader = DataLoader(
        IndexedClips(dataset, num_samples), batch_size=batch_size, num_workers=num_workers
    )
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
        i3d = i3d.to(accelerator.device)
    gather = accelerator.gather_for_metrics if accelerator else (lambda x: x)

    real, fake = [], []
    for group in range(groups):
        for video, labels, ids in loader:
            check_clips(video, context_frames, protocol.num_frames)
            video = video.to(module_device(i3d))
            with torch.no_grad():
                context = video[:, :, :context_frames]
                generated = generate(context, video.shape[2], labels, group * num_samples + ids)
            if generated.shape != video.shape:
                raise ValueError(
                    f"generate returned {list(generated.shape)} for clips of {list(video.shape)}: "
                    "it must return whole clips, context frames included"
                )
            fake.append(gather(embed(generated, i3d, protocol)).cpu())
            if group == 0:
                real.append(gather(embed(video, i3d, protocol)).cpu())
    return torch.cat(real), torch.cat(fake)


def frame_prediction_fvd(
    generate: Generate,
    dataset: Dataset,
    num_samples: int | None = None,
    groups: int | None = None,
    batch_size: int = 16,
    accelerator=None,
    context_frames: int = CONTEXT_FRAMES,
    protocol: Protocol | str = DEFAULT_PROTOCOL,
    i3d: nn.Module | None = None,
    num_workers: int = 0,
    report_path: str | Path | None = None,
) -> dict:
    """The K600 frame prediction FVD of `generate` (module doc); writes the JSON report on the main
    process if `report_path` is given. Each group is compared with the features of the same N real
    clips; the report has fvd (the mean over groups), fvd_std, fvd_groups, the protocol and the
    run's deviations from it (`num_samples` and `groups` default to the protocol's)."""
    protocol = get_protocol(protocol)
    num_samples = protocol.num_samples if num_samples is None else num_samples
    groups = protocol.groups if groups is None else groups
    i3d = default_i3d() if i3d is None else i3d
    real, fake = frame_prediction_features(
        generate, dataset, num_samples, groups, batch_size, accelerator, context_frames,
        protocol, i3d, num_workers,
    )  # fmt: skip
    reference = FeatureStats.from_features(real)  # every group against the same real clips
    settings = protocol_settings(i3d, protocol)
    report = {
        "task": "kinetics600_frame_prediction",
        **fvd_report(reference, fake, groups, settings, num_samples),
        "num_samples": num_samples,
        "dataset_size": len(dataset),
        "context_frames": context_frames,
        "num_processes": accelerator.num_processes if accelerator else 1,
    }
    if report_path is not None and (accelerator is None or accelerator.is_main_process):
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2))
    return report


def kinetics600_test_clips(root: str | Path, frames: int = 17, resolution: int = 128) -> Dataset:
    """The protocol's real clips: Kinetics-600 test, 17 frames at 128x128, as (video, label)."""
    from ..data import Kinetics600

    return Kinetics600(root, split="test", frames=frames, resolution=resolution, train=False)


def main(argv: list[str] | None = None) -> dict:
    from accelerate import Accelerator

    from ..flags import add_dataclass_arguments
    from ..pipeline import Pipeline

    parser = argparse.ArgumentParser(
        prog="ulvideo eval k600", description="the K600 frame prediction FVD of a stage-2 export"
    )
    parser.add_argument("--checkpoint", required=True, help="a stage-2 export (run/final)")
    parser.add_argument("--data_root", required=True, help="Kinetics-600 with its test split")
    parser.add_argument(
        "--protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOLS, help="the FVD protocol"
    )
    parser.add_argument("--num_samples", type=int, help="per group (default: the protocol's)")
    parser.add_argument("--groups", type=int, help="default: the protocol's")
    parser.add_argument("--resolution", type=int, default=128, help="the protocol's 128 px")
    parser.add_argument("--out", default="k600_fvd.json")
    add_dataclass_arguments(parser, SamplingConfig)
    args = parser.parse_args(argv)
    # clear errors about the data before any model is loaded
    dataset = kinetics600_test_clips(args.data_root, resolution=args.resolution)
    accelerator = Accelerator()
    pipeline = Pipeline.from_pretrained(args.checkpoint, map_location=accelerator.device)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)}
    sampling = SamplingConfig(**{k: v for k, v in given.items() if v is not None})
    report = frame_prediction_fvd(
        pipeline.frame_predictor(sampling),
        dataset,
        num_samples=args.num_samples,
        groups=args.groups,
        batch_size=sampling.batch_size,
        accelerator=accelerator,
        protocol=args.protocol,
    )
    report = {
        **report,
        "checkpoint": str(args.checkpoint),
        "sampling": dataclasses.asdict(sampling),
    }
    if accelerator.is_main_process:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    return report

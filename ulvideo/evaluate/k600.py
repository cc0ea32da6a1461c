"""`[accelerate launch -m] ulvideo eval k600 --checkpoint RUN/final --data_root K600`: the Kinetics-600
frame prediction FVD (evaluation.k600) of a stage-2 export, sampled with per-sample seeds, so the
clips scored are the same on any number of processes."""

import argparse
import dataclasses
import json
from pathlib import Path

from torch.utils.data import Dataset

from evaluation.fvd import PROTOCOLS
from evaluation.k600 import DEFAULT_PROTOCOL, frame_prediction_fvd

from ..sample import SamplingConfig


def kinetics600_test_clips(root: str | Path, frames: int = 17, resolution: int = 128) -> Dataset:
    """The protocol's real clips: Kinetics-600 test, 17 frames at 128x128, as (video, label)."""
    from ..data import Kinetics600

    return Kinetics600(root, split="test", frames=frames, resolution=resolution, train=False)


def main(argv: list[str] | None = None) -> dict:
    from accelerate import Accelerator

    from ..flags import add_dataclass_arguments
    from ..pipeline import Pipeline

    parser = argparse.ArgumentParser(prog="ulvideo eval k600", description=__doc__.split("\n")[0])
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

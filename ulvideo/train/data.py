"""Training data for each stage: pixel clips (stage 1 and 2) or pre-computed latent shards (stage 2)."""

import math
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..geometry import latent_grid
from .config import DATASET_OPTIONS, TrainConfig

ARGUMENT_NAMES = {"frame_stride": "stride", "target_fps": "fps"}  # config field: dataset argument
# Options of the training split only: evaluation clips stay centred and unflipped.
TRAINING_ONLY = ("temporal_crop", "spatial_crop", "flip")


@dataclass
class TrainingData:
    dataset: Dataset
    eval_dataset: Dataset | None
    num_classes: int
    from_latents: bool
    weights: tuple[float, ...] | None = None  # a Mixture's (dataset) sources' weights

    def has_evaluation(self) -> bool:
        """Whether the run has held-out clips to evaluate on."""
        return self.eval_dataset is not None and len(self.eval_dataset) > 0

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def prepare_batch(self, batch, stage, accelerator):
        """(inputs, labels) for `stage.forward`: videos, or (stage 2) clean latents."""
        inputs, labels = batch
        if hasattr(stage, "encode") and not self.from_latents:  # stage 2 from pixels
            with accelerator.autocast():
                inputs = stage.encode(inputs).float()
        return inputs, labels

    def eval_batch(self, stage, accelerator, size: int):
        """A fixed batch of the evaluation split, prepared like a training batch (or None)."""
        items = self._first_items(self.eval_dataset, size)
        return self._prepare_items(items, stage, accelerator) if items else None

    def eval_batches(self, stage, accelerator, size: int) -> dict:
        """Per bucket name, a fixed batch of the evaluation split's first source that fills it
        (centred clips); without buckets, ``{"": eval_batch}``. Empty where there is none."""
        if self.weights is None:
            batch = self.eval_batch(stage, accelerator, size)
            return {} if batch is None else {"": batch}
        return {
            name: self._prepare_items(items, stage, accelerator)
            for name, items in bucket_items(self.eval_dataset, size).items()
        }

    def reference_videos(self, count: int):
        """Fixed clips to measure the latents on (stage 1's latent scale), on the CPU: the
        evaluation split's first `count` (of a mixture: its first bucket's), else the training
        split's."""
        for dataset in (self.eval_dataset, self.dataset):
            items = self._first_items(dataset, count)
            if items:
                return stack_videos(items)
        return None

    def _first_items(self, dataset, count: int) -> list:
        """Up to `count` fixed items of `dataset` (of a mixture: its first bucket's); [] for none."""
        if self.weights is not None:
            return next(iter(bucket_items(dataset, count).values()), [])
        return [] if dataset is None else [dataset[i] for i in range(min(count, len(dataset)))]

    def _prepare_items(self, items, stage, accelerator):
        videos = stack_videos(items).to(accelerator.device)
        labels = torch.tensor([int(y) for _, y in items], device=accelerator.device)
        return self.prepare_batch((videos, labels), stage, accelerator)

    def bucket_loader(self, accelerator, num_workers: int) -> "BucketLoader":
        """This process's batches of a Mixture, one bucket per step on every process."""
        plan = self.dataset.plan(self.weights, accelerator.num_processes)
        return BucketLoader(self.dataset, plan, accelerator, num_workers)


class BucketLoader:
    """This process's rows of each step of a BatchPlan (of a Mixture, or of BucketedLatents), on
    its device; an epoch starts at a step."""

    def __init__(self, mixture, plan, accelerator, num_workers: int):
        from ..data.mixture import MixtureBatches

        self.plan, self.device = plan, accelerator.device
        self.sampler = MixtureBatches(plan, accelerator.process_index)
        # its own generator: each epoch's iterator draws a worker seed, which must not come from
        # the training RNG (a resumed run starts one more iterator than an uninterrupted one)
        self.loader = DataLoader(
            mixture,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(0),
        )

    def epoch(self, epoch: int, start: int):
        """The batches of ``epoch`` from its step ``start`` on; ``shape`` is the (frames, height,
        width) of the bucket of the batch last yielded (also for latents)."""
        self.sampler.set_position(epoch, start)
        for step, (inputs, labels) in enumerate(self.loader, start):
            self.shape = self.plan.buckets[self.plan.step(epoch, step).bucket].shape
            yield inputs.to(self.device), labels.to(self.device)


def stack_videos(items) -> torch.Tensor:
    """The videos of (video, label) items as one batch."""
    return torch.stack([torch.as_tensor(video) for video, _ in items])


def bucket_items(mixture, size: int) -> dict:
    """Per bucket name, up to `size` items of a Mixture's first source that has that bucket's
    shape (none for None)."""
    items = {}
    for b, bucket in enumerate(mixture.buckets if mixture is not None else ()):
        source = next((s for s, groups in enumerate(mixture.groups) if len(groups[b])), None)
        if source is not None:
            group = mixture.groups[source][b][:size]
            items[bucket.name] = [
                mixture[(source, b, int(i), 0, 0, r)] for r, i in enumerate(group)
            ]
    return items


def build_training_data(config: TrainConfig) -> TrainingData:
    """The training set (and a held-out split for periodic evaluation) of `config`."""
    from ..data import build_dataset

    if config.latents_dir is not None:
        from .latents import BucketedLatents, LatentShards, is_bucketed

        if is_bucketed(config.latents_dir):
            shards = BucketedLatents(config.latents_dir, config.seed)
            return TrainingData(shards, None, shards.num_classes, True, shards.weights)
        shards = LatentShards(config.latents_dir)
        return TrainingData(shards, None, shards.num_classes, from_latents=True)
    if config.bucketed:
        return build_mixture_data(config)
    kwargs = dataset_options(config, config.data)
    train_only = {name: kwargs.pop(name) for name in TRAINING_ONLY if name in kwargs}
    train_set = build_dataset(config.data, config.data_root, "train", **kwargs, **train_only)
    eval_set = None
    for eval_split in ("test",) if config.data == "demo" else ("val", "test"):
        try:
            eval_set = build_dataset(config.data, config.data_root, eval_split, **kwargs)
            break
        except (FileNotFoundError, ValueError):
            pass
    return TrainingData(
        train_set, eval_set, getattr(train_set, "num_classes", 0), from_latents=False
    )


def dataset_options(config: TrainConfig, name: str, frames: int | None = None) -> dict:
    """build_dataset's arguments for dataset ``name`` from ``config`` (its clip options)."""
    kwargs = dict(frames=config.frames if frames is None else frames, resolution=config.resolution)
    kwargs.update(
        (ARGUMENT_NAMES.get(option, option), getattr(config, option))
        for option in DATASET_OPTIONS.get(name, ())
    )
    return kwargs


def build_mixture(config: TrainConfig, split: str):
    """The Mixture of `config.sources()` in `config.bucket_table()` buckets: their "train" split,
    or ("eval") each source's held-out split where it has one (None if none has). Video files are
    indexed at any length (the buckets decide which are too short); the demo renders the longest
    bucket's frames."""
    from ..data import build_dataset
    from ..data.mixture import Mixture
    from ..data.registry import IMAGE_DATASETS

    buckets = config.bucket_table()
    longest = max(b.frames for b in buckets)
    datasets, names = [], []
    for source in config.sources():
        frames = 1 if source.name in IMAGE_DATASETS or source.name in DATASET_OPTIONS else longest
        kwargs = dataset_options(config, source.name, frames)
        if split == "train":
            datasets.append(build_dataset(source.name, source.root, split, **kwargs))
            names.append(source.label)
            continue
        for name in TRAINING_ONLY:  # evaluation clips stay centred and unflipped
            kwargs.pop(name, None)
        for eval_split in ("test",) if source.root is None else ("val", "test"):
            try:
                datasets.append(build_dataset(source.name, source.root, eval_split, **kwargs))
            except (FileNotFoundError, ValueError):
                continue
            names.append(source.label)
            break
    return Mixture(datasets, names, buckets, config.seed) if datasets else None


def build_mixture_data(config: TrainConfig) -> TrainingData:
    """A bucketed run's training mixture, its evaluation mixture and the sources' weights."""
    train = build_mixture(config, "train")
    weights = tuple(source.weight for source in config.sources())
    return TrainingData(train, build_mixture(config, "eval"), train.num_classes, False, weights)


def latent_tokens(stage, frames: int, height: int, width: int) -> int:
    """Latent tokens per example (T_z * H_z * W_z), for tokens/s."""
    cfg = stage.autoencoder_config
    grid = latent_grid(frames, height, width, cfg.temporal_downsample, cfg.spatial_downsample)
    return math.prod(grid)

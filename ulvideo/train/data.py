"""Training data for each stage: pixel clips (stage 1 and 2) or pre-computed latent shards (stage 2)."""

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

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
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return None
        items = [self.eval_dataset[i] for i in range(min(size, len(self.eval_dataset)))]
        videos = torch.stack([torch.as_tensor(v) for v, _ in items]).to(accelerator.device)
        labels = torch.tensor([int(y) for _, y in items], device=accelerator.device)
        return self.prepare_batch((videos, labels), stage, accelerator)


def build_training_data(config: TrainConfig) -> TrainingData:
    """The training set (and a held-out split for periodic evaluation) of `config`."""
    from ..data import build_dataset

    if config.latents_dir is not None:
        from .latents import LatentShards

        shards = LatentShards(config.latents_dir)
        return TrainingData(shards, None, shards.num_classes, from_latents=True)
    kwargs = dict(frames=config.frames, resolution=config.resolution)
    kwargs.update(
        (ARGUMENT_NAMES.get(name, name), getattr(config, name))
        for name in DATASET_OPTIONS.get(config.data, ())
    )
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


def latent_tokens(stage, config: TrainConfig) -> int:
    """Latent tokens per example (T_z * H_z * W_z), for tokens/s."""
    cfg = stage.autoencoder_config
    t = 1 + (config.frames - 1) // cfg.temporal_downsample
    return t * (config.resolution // cfg.spatial_downsample) ** 2

"""Accelerate training for both UL stages: config, loop, checkpoints, EMA, logging."""

from .config import TrainConfig, parse_config
from .trainer import NonFiniteLossError, TrainResult, train, train_main

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "parse_config",
    "train",
    "train_main",
]

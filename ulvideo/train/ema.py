"""Exponential moving average of model weights."""

import copy

import torch
from torch import nn

from .distributed import full_tensor


class EMA:
    """Keeps `ema = d * ema + (1 - d) * params` in fp32; checkpointable by accelerate.

    `model` must hold full weights (build the EMA before FSDP shards the network); `update` takes
    the trained network sharded or not: FSDP's shards are gathered (on every process) and the EMA
    stays a full fp32 copy on each process, so evaluation and exports need no gathering.

    The decay warms up as d = min(decay, (1 + n) / (10 + n)) after n updates (as TF's
    ExponentialMovingAverage with num_updates), so short runs export trained weights rather
    than an average dominated by the initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # EMA: theta_ema <- d * theta_ema + (1 - d) * theta
        d = self.current_decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(full_tensor(p.detach()).float(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(full_tensor(b))
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])

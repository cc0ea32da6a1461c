"""The EMA of the weights, with its warm-up, against a hand computation."""

import torch
from torch import nn

from ulvideo.train.ema import EMA


def test_ema_matches_hand_computation_and_round_trips():
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    expected = torch.zeros(1, 3)
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        d = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, ... capped at 0.9
        expected = d * expected + (1 - d) * value
        ema.update(model)
        torch.testing.assert_close(ema.model.weight, expected)
    assert ema.current_decay() == min(0.9, 6 / 15)
    restored = EMA(nn.Linear(3, 1, bias=False), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 5 and torch.equal(restored.model.weight, ema.model.weight)
    # after many updates the decay is the configured one
    ema.updates = 10_000
    assert ema.current_decay() == 0.9

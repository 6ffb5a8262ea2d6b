"""A small MLP: ranker heads (reward, cost), forward/inverse dynamics, value models.

Shapes: ``MLP(in_dim, out_dim, hidden=(256, 256))``: [..., in_dim] -> [..., out_dim].
Plain Linear + activation layers so the exporter can also write a closed-form backward
(guidance) and TensorRT parses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"mish": nn.Mish, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
                 act: str = "mish"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        self.in_dim, self.out_dim, self.hidden, self.act = in_dim, out_dim, tuple(hidden), act
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), ACTIVATIONS[act]()]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": list(self.hidden),
                "act": self.act}

"""The one-step state forecaster real-time chunking uses to plan from the execution-time state.

``ForecasterNet(S, A, step_scale)``: normalized state x_t [.., S] and action u_t [.., A]
(the trajectory normalizer's units) -> x_{t+1} = x_t + MLP([x_t, u_t]) * step_scale, where
``step_scale`` [S] is the spread of one-step changes in the training data (so the network's
output is O(1) in every dimension). Rolled over the committed actions inside the engine
graph (``export.sampling.base``), it forecasts the state at the tick the plan's first free
action runs. Plain Linear + activation layers: ONNX- and TensorRT-friendly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from export.models.mlp import MLP


class ForecasterNet(nn.Module):
    def __init__(self, S: int, A: int, step_scale: Sequence[float], hidden: Sequence[int] = (256, 256),
                 act: str = "silu"):
        super().__init__()
        if len(step_scale) != S:
            raise ValueError(f"step_scale needs {S} values, got {len(step_scale)}")
        self.S, self.A = int(S), int(A)
        self.mlp = MLP(S + A, S, hidden, act)
        self.register_buffer("step_scale", torch.tensor([float(v) for v in step_scale], dtype=torch.float32))

    def config(self) -> dict:
        return {"S": self.S, "A": self.A, "step_scale": [float(v) for v in self.step_scale.tolist()],
                "hidden": list(self.mlp.hidden), "act": self.mlp.act}

    def forward(self, xn: torch.Tensor, un: torch.Tensor) -> torch.Tensor:
        return xn + self.mlp(torch.cat([xn, un], dim=-1)) * self.step_scale

"""Closed-form input gradients of small MLPs, for guidance inside exported graphs.

Guided samplers (DADP-F/I, DMEMM) need d(model output)/d(plan) at every reverse step.
Calling ``torch.autograd`` inside a sampler's ``forward`` does not export to ONNX and
would not run in the engine, so the backward pass of a Linear/activation stack is written
out here explicitly: a vector-Jacobian product (VJP) ``v^T dy/dx`` built only from
matmuls and elementwise ops (MatMul, Add, Mul, Sigmoid, Tanh, Softplus, Erf, Where),
all in TensorRT's ONNX operator list.

Supported layers: ``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.SiLU``, ``nn.Mish``,
``nn.Tanh``, ``nn.Sigmoid``, ``nn.Softplus`` (beta only, no threshold switch), ``nn.GELU``
(exact or tanh), ``nn.ELU``. Anything else raises ``ValueError`` naming the layer.

Shapes: ``x [..., in]``, cotangent ``v [..., out]`` -> ``(y [..., out], g [..., in])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = math.sqrt(2.0 / math.pi)


def _act_value_and_slope(layer: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activation(z), activation'(z)) for one elementwise activation layer."""
    if isinstance(layer, nn.ReLU):
        pos = (z > 0).to(z.dtype)
        return z * pos, pos
    if isinstance(layer, nn.LeakyReLU):
        slope = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, layer.negative_slope))
        return z * slope, slope
    if isinstance(layer, nn.SiLU):
        s = torch.sigmoid(z)
        return z * s, s * (1.0 + z * (1.0 - s))
    if isinstance(layer, nn.Mish):
        t = torch.tanh(nn.functional.softplus(z))
        return z * t, t + z * (1.0 - t * t) * torch.sigmoid(z)
    if isinstance(layer, nn.Tanh):
        t = torch.tanh(z)
        return t, 1.0 - t * t
    if isinstance(layer, nn.Sigmoid):
        s = torch.sigmoid(z)
        return s, s * (1.0 - s)
    if isinstance(layer, nn.Softplus):
        b = float(layer.beta)
        return nn.functional.softplus(z * b) / b, torch.sigmoid(z * b)
    if isinstance(layer, nn.GELU):
        if layer.approximate == "tanh":
            u = _GELU_C * (z + 0.044715 * z ** 3)
            t = torch.tanh(u)
            du = _GELU_C * (1.0 + 3.0 * 0.044715 * z * z)
            return 0.5 * z * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
        cdf = 0.5 * (1.0 + torch.erf(z / _SQRT2))
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return z * cdf, cdf + z * pdf
    if isinstance(layer, nn.ELU):
        a = float(layer.alpha)
        neg = a * (torch.exp(torch.clamp(z, max=0.0)) - 1.0)
        y = torch.where(z > 0, z, neg)
        return y, torch.where(z > 0, torch.ones_like(z), neg + a)
    raise ValueError(f"closed-form gradient does not support layer {type(layer).__name__}")


def mlp_forward_cache(layers: Sequence[nn.Module], x: torch.Tensor
                      ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Forward pass of a Linear/activation stack, keeping each activation's slope."""
    slopes: list[torch.Tensor | None] = []
    h = x
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h = nn.functional.linear(h, layer.weight, layer.bias)
            slopes.append(None)
        else:
            h, s = _act_value_and_slope(layer, h)
            slopes.append(s)
    return h, slopes


def mlp_backward(layers: Sequence[nn.Module], slopes: Sequence[torch.Tensor | None],
                 v: torch.Tensor) -> torch.Tensor:
    """``v^T dy/dx`` from the cached slopes: layers in reverse, a Linear maps the
    cotangent by ``g @ W``, an activation multiplies it by its slope."""
    g = v
    for layer, s in zip(reversed(layers), reversed(slopes), strict=True):
        if isinstance(layer, nn.Linear):
            g = torch.matmul(g, layer.weight)
        else:
            g = g * s
    return g


def mlp_forward_vjp(layers: Sequence[nn.Module], x: torch.Tensor,
                    v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass and ``v^T dy/dx`` of a Linear/activation stack, no autograd."""
    h, slopes = mlp_forward_cache(layers, x)
    if v.shape[-1] != h.shape[-1]:
        raise ValueError(f"cotangent has {v.shape[-1]} features, the MLP outputs {h.shape[-1]}")
    return h, mlp_backward(layers, slopes, v)


class GradMLP(nn.Module):
    """A plain MLP (Linear -> act -> ... -> Linear) that also returns its input VJP.

    ``forward(x [..., in]) -> [..., out]``; ``forward_vjp(x, v [..., out])`` ->
    ``(y, v^T dy/dx [..., in])`` in closed form (exportable, no autograd).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
                 act: str = "mish"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"MLP sizes must be positive: in {in_dim}, hidden {list(hidden)}, out {out_dim}")
        dims = [in_dim, *hidden, out_dim]
        mods: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mods.append(ACTIVATIONS[act]())
        self.net = nn.Sequential(*mods)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_vjp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mlp_forward_vjp(list(self.net), x, v)

    def forward_cache(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Output and the activation slopes needed by ``backward``."""
        return mlp_forward_cache(list(self.net), x)

    def backward(self, slopes: list[torch.Tensor | None], v: torch.Tensor) -> torch.Tensor:
        """``v^T dy/dx`` at the point ``forward_cache`` was run on."""
        return mlp_backward(list(self.net), slopes, v)

    def input_grad(self, x: torch.Tensor) -> torch.Tensor:
        """d(sum of outputs)/dx: the gradient of a scalar head (out_dim 1)."""
        v = torch.ones(*x.shape[:-1], self.out_dim, dtype=x.dtype, device=x.device)
        return self.forward_vjp(x, v)[1]

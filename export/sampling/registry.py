"""Build a method's reference sampler from checkpoints: what the exporter and evaluation use.

    build_sampler(source, method, graph="fused", n_samples=1, **knobs) -> nn.Module

``source``: a directory holding ``<component>.pt`` files (as ``planner-runtime train
--out DIR`` writes them), a list of checkpoint paths, a dict component -> path, or an ONNX
engine (the networks inside it, recovered by ``export.from_engine``).
``method``: a key of ``SAMPLER_BUILDERS`` ("mpdiffuser", "planner" (the planner-only
ablation), and the other methods as their modules register).
``graph``: "fused" -> ``FusedSampler`` (engine.FUSED_INPUTS -> FUSED_OUTPUTS), "step" ->
``StepSampler`` (engine.STEP_INPUTS -> STEP_OUTPUTS), "sampler" -> the bare
``DiffusionSampler`` (its ``forward`` is the fused graph, ``.step`` the step graph).
Knobs go to the method's builder (e.g. ``budget``, ``gamma``, ``clip`` for MPDiffuser).
A scalar target extra of the condition the networks were trained with (``cost_to_go``) is
fixed in the graph (``DiffusionSampler.set_targets``): knob ``cost_to_go=V``, default
``DEFAULT_TARGETS``; the graph's cond input then lacks that column. Knob
``cost_to_go_tilted=V`` gates it on the start state's tilt (``set_target_gate``): V while
x_0 tilts at least ``tilt_gate_deg`` (default ``TILT_GATE_DEG``) degrees.
Weights are the EMA weights (``ema=False``: the raw weights); the module is in eval mode with gradients off.
``build_sampler_components`` also returns the checkpoints the method read (what export records).

A builder is ``fn(cks: dict[component, checkpoint dict], *, n_samples, **knobs) ->
DiffusionSampler``; entries are "module:function" strings imported on first use, so adding
a method is one line here and no module imports every method.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from export.from_engine import is_engine_file, recover_components
from export.sampling.base import DiffusionSampler, FusedSampler, StepSampler
from export.train.checkpoint import CheckpointError, check_compatible, load_checkpoint

SAMPLER_BUILDERS: dict[str, str | Callable[..., DiffusionSampler]] = {
    "mpdiffuser": "export.sampling.mpdiffuser:build_mpdiffuser",
    "planner": "export.sampling.mpdiffuser:build_planner_only",
}
GRAPHS = ("fused", "step", "sampler")
# the value a target extra is fixed to unless a knob names another: no tilt over the plan
DEFAULT_TARGETS: dict[str, float] = {"cost_to_go": 0.0}
# tilt-gated targets: knob -> the target it gates (``DiffusionSampler.set_target_gate``), and
# the gate's angle unless knob ``tilt_gate_deg`` names another (under the tilt cost's ~18 deg,
# where the Go2's upright walking peaks: docs/robustness.md)
GATED_TARGETS: dict[str, str] = {"cost_to_go_tilted": "cost_to_go"}
TILT_GATE_DEG = 8.0


# Modules that call ``register_sampler`` when imported (other methods' samplers); imported
# on the first lookup of a name that is not registered yet.
PLUGIN_MODULES: tuple[str, ...] = ("export.sampling.dadp", "export.sampling.dmemm")


def register_sampler(name: str, builder: str | Callable[..., DiffusionSampler]) -> None:
    SAMPLER_BUILDERS[name] = builder


def _load_plugins() -> None:
    for mod in PLUGIN_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def _resolve(method: str) -> Callable[..., DiffusionSampler]:
    if method not in SAMPLER_BUILDERS:
        _load_plugins()
    if method not in SAMPLER_BUILDERS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(SAMPLER_BUILDERS)}")
    b = SAMPLER_BUILDERS[method]
    if isinstance(b, str):
        mod, fn = b.split(":")
        b = getattr(importlib.import_module(mod), fn)
    return b


def load_components(source: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, Any]
                    ) -> dict[str, dict[str, Any]]:
    """component name -> checkpoint dict, from a directory, a list of files, a dict (of paths
    or of checkpoint dicts) or an engine file (its networks, ``export.from_engine``)."""
    if isinstance(source, Mapping):
        return {str(k): dict(v) if isinstance(v, Mapping) else load_checkpoint(v) for k, v in source.items()}
    paths: list[Path]
    if is_engine_file(source):  # the networks inside an engine file
        return recover_components(source)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        paths = sorted(Path(source).glob("*.pt"))
        if not paths:
            raise CheckpointError(f"no *.pt checkpoints in {source}")
    elif isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    else:
        paths = [Path(p) for p in source]
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        ck = load_checkpoint(p)
        out[str(ck["component"])] = ck
    return out


def require(cks: Mapping[str, dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    missing = [n for n in names if n not in cks]
    if missing:
        raise CheckpointError(f"missing checkpoint component(s) {missing}; have {sorted(cks)}")
    return [cks[n] for n in names]


class _UsedComponents(Mapping[str, dict[str, Any]]):
    """The checkpoints a builder is offered; records which ones it reads (``cks[name]``)."""

    def __init__(self, cks: Mapping[str, dict[str, Any]]) -> None:
        self._cks = dict(cks)
        self.used: list[str] = []

    def __getitem__(self, name: str) -> dict[str, Any]:
        ck = self._cks[name]
        if name not in self.used:
            self.used.append(name)
        return ck

    def __iter__(self):
        return iter(self._cks)

    def __len__(self) -> int:
        return len(self._cks)


def build_sampler(source: Any, method: str, graph: str = "fused", n_samples: int = 1,
                  ema: bool = True, **knobs: Any) -> nn.Module:
    return build_sampler_components(source, method, graph, n_samples, ema, **knobs)[0]


def build_sampler_components(source: Any, method: str, graph: str = "fused", n_samples: int = 1,
                             ema: bool = True, **knobs: Any
                             ) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """``build_sampler`` plus the checkpoints the method actually used (name -> checkpoint),
    in the order it read them: exactly the components its sampler is built from (a folder
    may hold others: a ranker an N = 1 engine does not use, another method's networks)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    cks = load_components(source)
    if not ema:  # evaluate the raw (non-averaged) weights instead
        cks = {k: {**ck, "ema": ck["model"]} for k, ck in cks.items()}
    offered = _UsedComponents(cks)
    builder = _resolve(method)
    targets = {k: knobs.pop(k) for k in list(knobs) if k in DEFAULT_TARGETS}
    gated = {GATED_TARGETS[k]: knobs.pop(k) for k in list(knobs) if k in GATED_TARGETS}
    gate_deg = knobs.pop("tilt_gate_deg", None)
    if gate_deg is not None and not gated:
        raise ValueError(f"knob tilt_gate_deg needs a gated target ({', '.join(GATED_TARGETS)})")
    sampler = builder(offered, n_samples=n_samples, **knobs)
    used = {n: cks[n] for n in offered.used}
    check_compatible(used or cks)  # only what is composed must agree
    first = next(iter((used or cks).values()))  # compatible: its config and data speak for all
    extras = list((first.get("config") or {}).get("cond_extras") or [])
    unused = sorted(set(targets) - set(extras)) + sorted(k for k, t in GATED_TARGETS.items()
                                                          if t in gated and t not in extras)
    if unused:
        raise ValueError(f"knob(s) {unused}: the networks were trained without that condition "
                         f"(cond_extras {extras})")
    fixed = {k: float(targets.get(k, v)) for k, v in DEFAULT_TARGETS.items() if k in extras}
    if fixed:
        sampler.set_targets(extras, fixed)
    if gated:
        names = list((first.get("dataset") or {}).get("state_names") or [])
        sampler.set_target_gate(names, gated, TILT_GATE_DEG if gate_deg is None else gate_deg)
    sampler.eval()
    for p in sampler.parameters():
        p.requires_grad_(False)
    if graph == "fused":
        return FusedSampler(sampler).eval(), used
    if graph == "step":
        return StepSampler(sampler).eval(), used
    return sampler, used

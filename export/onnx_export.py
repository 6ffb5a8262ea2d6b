"""Checkpoints -> self-describing ONNX engines (fused or step graph) with a manifest.

``export_engine(sampler, path, graph=..., meta=...)`` traces a method's reference sampler
(``export.sampling``; the math lives there and only there) into ONNX with fixed shapes:

- fused: ``FusedSampler`` with ``n_steps`` reverse steps unrolled (every network of the
  method, the CFG batch, the ranker when N > 1); levels stay a graph input, so one graph
  serves the warm ([k_w..0]) and the cold (DDIM from K) sequence of the same length.
- step: ``StepSampler``, one reverse step, level / next_level / start as inputs.

Then: constant folding (by the exporter), the exact graph passes of ``export.graph_passes``
(GroupNorm affines as BatchNormalization; recorded in the manifest's
``provenance.graph_passes``), ``onnx.checker``, the operator check against
TensorRT's ONNX parser (``export.trt_ops``), the manifest (``planner_runtime.manifest``)
with the graph checksum, written into the model's metadata.

Exporter: the legacy TorchScript exporter (``dynamo=False``) is the default. Measured here
on the Go2-sized MPDiffuser graph (2 U-Nets x 7 steps, CFG): it exports in ~5-8 s with ORT
latency equal to the dynamo exporter's within the noise of this loaded machine, while the
dynamo exporter takes ~20 s plus ~60 s for its graph optimizer (see /tmp/notes/export.md
and ``planner-runtime bench``). ``exporter="dynamo"`` is kept as an option.
"""

from __future__ import annotations

import io
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.graph_passes import DEFAULT_PASSES, apply_passes
from export.trt_ops import TRT_MAX_OPSET, unsupported_ops
from planner_runtime import manifest as mf
from planner_runtime.engine import FUSED_INPUTS, FUSED_OUTPUTS, STEP_INPUTS, STEP_OUTPUTS
from planner_runtime.engine_file import attach_manifest
from planner_runtime.provenance import utc_stamp
from planner_runtime.schedule import ddim_levels, warm_levels

log = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 18  # Mish / GroupNormalization era; TensorRT 10's parser reads opsets 9-20


class ExportError(ValueError):
    """The sampler cannot be exported as asked (bad options, unsupported operators...)."""


@dataclass
class EngineMeta:
    """Everything the manifest needs that is not in the sampler itself.

    ``control_dt`` has no default: it is the data's (``export`` reads it from the checkpoints),
    the robot profile's (``go2_meta``), or the caller's. ``overrides`` names every manifest
    value that contradicts or replaces what the data said: {"control.dt": {"value": 0.02,
    "data": 0.1, "by": "--dt 0.02 --force"}}; it is stored as the manifest's ``overrides``."""

    robot: str = "generic"
    observation: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    control_dt: float | None = None
    dt_source: str = "caller"
    chunk_size: int = 4
    warm_level: int = 7
    cfg_w: float = 2.0
    temperature: float = 0.001
    provenance: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def generic_meta(S: int, A: int, C: int, *, state_names: list[str] | None = None,
                 action_names: list[str] | None = None, condition_names: list[str] | None = None,
                 robot: str | None = None, **kw: Any) -> EngineMeta:
    """Meta for a system without a robot profile: the data's names (numbered names s0.., a0..,
    c0.. only where the caller has none), identity action semantics (target = a)."""
    def names(given: list[str] | None, n: int, prefix: str, what: str) -> list[str]:
        if given is None:
            return [f"{prefix}{i}" for i in range(n)]
        if len(given) != n:
            raise ExportError(f"{what}: {len(given)} names for {n} dimensions ({list(given)})")
        return [str(x) for x in given]

    sn = names(state_names, S, "s", "state names")
    an = names(action_names, A, "a", "action names")
    cn = names(condition_names, C, "c", "condition names")
    numbered = [w for w, g in (("state", state_names), ("action", action_names),
                               ("condition", condition_names)) if g is None]
    obs = {"version": 1, "robot": robot or "generic", "state_names": sn, "condition_names": cn,
           "action_names": an, "joint_order": an, "default_joint_pos": [0.0] * A,
           "units": "dataset units",
           "names_source": "dataset" if not numbered else f"numbered ({', '.join(numbered)}: "
                                                           "the data recorded no names)"}
    action = {"joint_names": an, "default_joint_pos": [0.0] * A, "scale": 1.0,
              "source": "identity (target = a): the data recorded no action semantics"}
    return EngineMeta(robot=obs["robot"], observation=obs, action=action, **kw)


def go2_meta(action_semantics: dict[str, Any] | None = None, history: tuple[str, ...] = (),
             **kw: Any) -> EngineMeta:
    """Meta for the Unitree Go2 from the robot package (observation builder + constants).

    ``action_semantics`` is the training data's (default pose, per-joint scale, PD gains);
    data that did not record it was collected with the project's trot expert semantics
    (``robot.actions.PROJECT``), and the manifest says so (``source``). ``history``: the
    condition's history blocks (robot.observation.HISTORY_BLOCKS) the networks were trained with.
    PD gains set at export (``export --kp/--kd``) are in ``action_semantics``, the data's in
    ``overrides`` (``action.kp``/``action.kd``), and ``source`` says so. ``control_dt`` not
    given: the Go2 profile's policy dt (``dt_source`` says so)."""
    from robot import go2_constants as g
    from robot.actions import PROJECT, ActionSemantics
    from robot.controller import go2_profile
    from robot.observation import condition_names, observation_spec

    obs = observation_spec(history)
    if action_semantics is None:
        action = {**PROJECT.as_dict(), "source": "robot.actions.PROJECT (the data recorded none)"}
    else:
        sem = ActionSemantics.from_dict(action_semantics, "the training data's action semantics")
        gains_set = any(k.startswith("action.") for k in kw.get("overrides", {}))
        action = {**sem.as_dict(), "source": "training dataset" + (
            "; PD gains set at export (see overrides)" if gains_set else "")}
    if kw.get("control_dt") is None:
        kw["control_dt"] = float(g.POLICY_DT)
        kw["dt_source"] = "go2 profile (robot.go2_constants.POLICY_DT)"
    kw.setdefault("chunk_size", int(g.CHUNK_SIZE))
    return EngineMeta(robot="go2", observation=obs, action=action, profile=go2_profile(condition_names(history)), **kw)


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "sampler", module)


def _versions() -> dict[str, str]:
    import platform

    import onnxruntime

    out = {"torch": str(torch.__version__), "onnx": onnx.__version__,
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    try:
        from importlib.metadata import version

        out["planner_runtime"] = version("planner-runtime")
    except Exception:
        out["planner_runtime"] = "unknown"
    return out


def _normalizer_block(s: nn.Module) -> dict[str, Any]:
    def stats(m: nn.Module) -> dict[str, Any]:
        out = {"shift": [float(v) for v in m.shift], "scale": [float(v) for v in m.scale]}
        if getattr(m, "constant", ()):
            out["constant"] = [int(i) for i in m.constant]  # placeholder scale: not a range
        return out

    return {"kind": str(s.norm_traj.kind), "traj": stats(s.norm_traj), "cond": stats(s.norm_cond),
            "formula": "z = (x - shift) / scale; traj rows [x (S), u (A)]; x0 uses traj[:S]"}


def build_manifest(module: nn.Module, graph: str, n_steps: int, meta: EngineMeta) -> dict[str, Any]:
    """The manifest (without checksum) of ``module`` exported as ``graph``."""
    s = _unwrap(module)
    K, kw = int(s.K), int(meta.warm_level)
    if meta.control_dt is None or not math.isfinite(float(meta.control_dt)) or float(meta.control_dt) <= 0:
        raise ExportError(f"control dt unknown or invalid ({meta.control_dt!r}): the checkpoints' data "
                          "recorded none; give it (planner-runtime export --dt SECONDS)")
    if not 1 <= kw <= K:
        raise ExportError(f"warm_level must be in [1, K={K}], got {kw}")
    knobs = json.loads(json.dumps(s.knobs() if hasattr(s, "knobs") else {}))
    B = int(getattr(s, "n_samples", 1))
    clip = getattr(s, "clip", None)
    return {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION,
        "method": {"name": str(s.method), "knobs": knobs},
        "graph": {"kind": graph, "n_steps": n_steps if graph == "fused" else 1,
                  "inputs": list(FUSED_INPUTS if graph == "fused" else STEP_INPUTS),
                  "outputs": list(FUSED_OUTPUTS if graph == "fused" else STEP_OUTPUTS)},
        "dims": {"S": int(s.S), "A": int(s.A), "C": int(s.C_in), "H": int(s.H), "B": B},
        "diffusion": {"K": K, "schedule": str(s.sched.kind), "warm_level": kw,
                      "cold_levels": ddim_levels(K, n_steps).tolist(),
                      "warm_levels": warm_levels(kw).tolist(),
                      "cfg_w": float(meta.cfg_w), "temperature": float(meta.temperature),
                      "clip": None if clip is None else [-float(clip), float(clip)]},
        "normalizer": _normalizer_block(s),
        "observation": meta.observation,
        "action": meta.action,
        "control": {"dt": float(meta.control_dt), "chunk_size": int(meta.chunk_size),
                    "dt_source": str(meta.dt_source)},
        "overrides": json.loads(json.dumps(meta.overrides)),
        "robot": {"name": meta.robot, "profile": meta.profile},
        "provenance": {"created_utc": utc_stamp(),
                       "versions": _versions(), **meta.provenance},
        "checksums": {"graph_sha256": "0" * 64},  # replaced by attach_manifest
    }


def example_inputs(module: nn.Module, graph: str, n_steps: int, warm_level: int,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs with the engine's fixed shapes (values only matter for the trace's sanity)."""
    s = _unwrap(module)
    B = int(getattr(s, "n_samples", 1))
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, s.S, generator=g)
    cond = torch.randn(B, s.C_in, generator=g)
    prev = torch.randn(B, s.H, s.D, generator=g)
    noise = torch.randn(B, s.H, s.D, generator=g)
    w = torch.tensor([2.0])
    prefix = torch.randn(B, s.H, s.A, generator=g)
    n_prefix = torch.tensor([2], dtype=torch.int64)
    if graph == "fused":
        return x0, cond, prev, noise, torch.as_tensor(warm_levels(n_steps)), w, prefix, n_prefix
    tau = torch.randn(B, s.H, s.D, generator=g)
    k = torch.tensor([warm_level], dtype=torch.int64)
    return x0, cond, prev, noise, tau, k, k - 1, torch.tensor([1], dtype=torch.int64), w, prefix, n_prefix


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], graph: str,
            exporter: str = "torchscript", opset: int = DEFAULT_OPSET,
            passes: tuple[str, ...] | list[str] = DEFAULT_PASSES) -> onnx.ModelProto:
    """Trace ``module`` to an ONNX ModelProto with fixed shapes and the contract's names,
    then run the graph ``passes`` (``export.graph_passes``) over it."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if opset > TRT_MAX_OPSET:
        raise ExportError(f"opset {opset} is newer than TensorRT's parser reads ({TRT_MAX_OPSET})")
    ins = list(FUSED_INPUTS if graph == "fused" else STEP_INPUTS)
    outs = list(FUSED_OUTPUTS if graph == "fused" else STEP_OUTPUTS)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the static step count are expected
        if exporter == "torchscript":
            buf = io.BytesIO()
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                              do_constant_folding=True, input_names=ins, output_names=outs)
            model = onnx.load_from_string(buf.getvalue())
        else:
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                     input_names=ins, output_names=outs, optimize=True,
                                     verbose=False)
            model = prog.model_proto
    return apply_passes(model, passes)


def check_graph(model: onnx.ModelProto) -> None:
    """onnx.checker + TensorRT operator coverage + the contract's fixed (static) shapes."""
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    foreign = {f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    no_trt, not_allowed = unsupported_ops(ops)
    if foreign or no_trt or not_allowed:
        raise ExportError(
            f"exported graph uses operators outside the engine set: not in TensorRT's parser "
            f"{sorted(no_trt)}, not in export.trt_ops.ENGINE_OPS {sorted(not_allowed)}, "
            f"custom domains {sorted(foreign)}"
        )
    for vi in list(model.graph.input) + list(model.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                raise ExportError(f"graph {vi.name!r} has a dynamic dimension {d.dim_param!r}")
    # TensorRT's parser restrictions (operators.md): these `axes` inputs (and Split's sizes)
    # must be constants.
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    axes_input = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "ReduceSum": 1, "Split": 1}
    for n in model.graph.node:
        k = axes_input.get(n.op_type)
        if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in consts:
            raise ExportError(f"{n.op_type} node {n.name!r} has non-constant axes or sizes: "
                              "TensorRT cannot parse it")


def export_engine(module: nn.Module, path: str | Path, graph: str = "fused",
                  n_steps: int | None = None, meta: EngineMeta | None = None,
                  exporter: str = "torchscript", opset: int = DEFAULT_OPSET,
                  passes: tuple[str, ...] | list[str] = DEFAULT_PASSES) -> mf.Manifest:
    """Export a sampler (bare, FusedSampler or StepSampler) as an engine; return its manifest
    (``build_manifest``'s dict, parsed and stored by ``attach_manifest``). ``passes``: the
    graph passes to run (``export.graph_passes``), recorded as ``provenance.graph_passes``."""
    from export.sampling.base import FusedSampler, StepSampler

    if graph not in ("fused", "step"):
        raise ExportError(f"graph must be 'fused' or 'step', got {graph!r}")
    s = _unwrap(module)
    meta = meta or generic_meta(int(s.S), int(s.A), int(s.C_in))
    n = int(n_steps if n_steps is not None else meta.warm_level)
    if graph == "fused" and n != meta.warm_level:
        # The fused graph runs exactly n steps; the warm sequence [k_w..0] has k_w of them.
        raise ExportError(f"a fused graph unrolls n_steps = warm_level steps; got n_steps {n}, "
                          f"warm_level {meta.warm_level}")
    wrapper = FusedSampler(s) if graph == "fused" else StepSampler(s)
    written = build_manifest(s, graph, n, meta)
    written["provenance"]["graph_passes"] = list(passes)
    args = example_inputs(s, graph, n, meta.warm_level)
    model = to_onnx(wrapper, args, graph, exporter, opset, passes)
    model.producer_name = "planner-runtime export"
    check_graph(model)
    manifest = attach_manifest(model, written)  # the one parse, before it is stored
    model.doc_string = f"{manifest.method.name} {graph} graph (planner-runtime engine)"
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    onnx.save_model(model, tmp)
    tmp.replace(p)
    log.info("wrote %s: %s %s graph, %d nodes", p, manifest.method.name, graph, len(model.graph.node))
    return manifest

"""The trained networks inside an ONNX engine, recovered as checkpoints.

An engine written by ``planner-runtime export`` holds every network it composes (their EMA
weights) as graph constants, and its manifest records what rebuilds them: each component's
model class and config (``provenance.checkpoints``), the normalizers, the noise schedule,
the data's names and action semantics, the training config and the sampling knobs. So the
networks of an engine whose training run is gone (the embedded default's, on a new clone)
can be exported again with another sampler (the planner-only ablation, other knobs, a step
graph for TensorRT) or fine-tuned (``train --init-from``) without training them again::

    planner-runtime export --checkpoints planner_runtime/engines/go2.onnx --method planner ... -o po.onnx
    python -m export.from_engine planner_runtime/engines/go2.onnx --out ck   # <component>.pt files

How the weights are found. Most parameters are constants named by their module path
(``sampler.<component>.<param>``, with ``.net`` for a network trained to predict the clean
trajectory, which the sampler wraps in ``EpsFromX0``). The exporter folds the others into
unnamed constants (a GroupNorm's affine reshaped, every FiLM layer of a U-Net concatenated
by ``TemporalUnet._films``, the null condition multiplied into the CFG batch) and merges
constants of equal value. So the engine's sampler is rebuilt from the manifest with distinct
random weights and exported the same way: each parameter's values then appear in exactly
one constant of that reference graph, whole or as a contiguous block (row-major, or of its
transpose), and the engine's constant in the same operator input, node by node, holds the
trained values at the same place.

Proof: the recovered networks are exported once more as the engine was, and that graph must
have the engine's graph checksum (``checksums.graph_sha256``): same operators, same constants,
bit for bit. Anything else (an engine from another exporter or torch version whose constants
are named otherwise, a method whose knobs this module cannot rebuild, a manifest that does
not describe its graph) is refused with the reason; nothing is recovered approximately.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

# knobs a sampler's ``knobs()`` writes that its builder takes back as they are
_PLAIN_KNOBS = ("clip", "gamma", "budget")
# knobs that only describe the sampler (implied by the method or by the components)
_IMPLIED_KNOBS = ("alternation", "prefix", "n_samples")
# the methods whose samplers ``export.sampling.mpdiffuser`` builds (the knobs above are theirs)
METHODS = ("mpdiffuser", "planner")


class RecoveryError(ValueError):
    """The engine's networks cannot be recovered exactly (the message says why)."""


def is_engine_file(source: Any) -> bool:
    """Whether a checkpoint source names an engine file (by its suffix: ONNX or TensorRT)."""
    from planner_runtime.engine_file import ONNX_SUFFIXES, PLAN_SUFFIXES

    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in ONNX_SUFFIXES + PLAN_SUFFIXES


def builder_knobs(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``build_sampler`` knobs that rebuild the sampler a manifest describes (the inverse
    of ``DiffusionSampler.knobs`` for the MPDiffuser samplers)."""
    from export.sampling.registry import GATED_TARGETS

    method = manifest["method"]
    if method["name"] not in METHODS:
        raise RecoveryError(f"recovering a {method['name']!r} engine is not supported (only {METHODS}): "
                            "its sampler's knobs are not rebuilt here")
    knobs: dict[str, Any] = {}
    left = dict(method.get("knobs") or {})
    for k in _PLAIN_KNOBS:
        if k in left:
            knobs[k] = left.pop(k)
    for k in _IMPLIED_KNOBS:
        left.pop(k, None)
    states = left.pop("forecast_states", None)
    if states is None:
        knobs["forecast_states"] = "none"
    else:
        S = int(manifest["dims"]["S"])
        names = list((manifest.get("observation") or {}).get("state_names") or [])
        if sorted(states) == list(range(S)):
            knobs["forecast_states"] = "all"
        elif len(names) == S:
            knobs["forecast_states"] = ",".join(names[i] for i in states)
        else:
            raise RecoveryError("the engine forecasts some state dimensions but names no states")
    knobs.update(left.pop("condition_targets", None) or {})
    gate = left.pop("condition_target_gate", None)
    if gate:
        by_target = {t: k for k, t in GATED_TARGETS.items()}
        for target, value in gate["targets"].items():
            if target not in by_target:
                raise RecoveryError(f"a tilt gate on {target!r} is not one the exporter builds")
            knobs[by_target[target]] = value
        knobs["tilt_gate_deg"] = gate["tilt_deg"]
    if left:
        raise RecoveryError(f"unknown sampling knobs in the manifest: {sorted(left)}")
    return knobs


def _checkpoints(manifest: dict[str, Any], names: set[str], source: str) -> dict[str, dict[str, Any]]:
    """Checkpoint dicts (weights still the model classes' initial ones) for the components the
    manifest records."""
    from export.models.unet import TemporalUnet
    from export.train.checkpoint import FORMAT, FORMAT_VERSION, new_model

    prov = manifest.get("provenance") or {}
    comps = prov.get("checkpoints") or {}
    if not comps or any("model_class" not in c or "model_config" not in c for c in comps.values()):
        raise RecoveryError(f"{source}: the manifest does not record its networks' model classes and "
                            "configs (exported before they were recorded): export it again from its checkpoints")
    norm, dims, diff = manifest["normalizer"], manifest["dims"], manifest["diffusion"]
    normalizers = {k: {"kind": norm["kind"], "shift": list(norm[k]["shift"]), "scale": list(norm[k]["scale"]),
                       **({"constant": list(norm[k]["constant"])} if norm[k].get("constant") else {})}
                   for k in ("traj", "cond")}
    out: dict[str, dict[str, Any]] = {}
    for comp, c in comps.items():
        cfg = {**(prov.get("training_config") or {}), "components": comp, "steps": c.get("total_steps"),
               "run_id": c.get("run_id")}
        out[comp] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "method": cfg.get("method"),
            "component": comp, "model_class": c["model_class"], "model_config": c["model_config"],
            "dims": {"S": int(dims["S"]), "A": int(dims["A"]), "C": len(norm["cond"]["shift"]),
                     "H": int(dims["H"])},
            "schedule": {"num_levels": int(diff["K"]), "kind": str(diff["schedule"])},
            "normalizers": normalizers, "config": cfg, "step": c.get("step"),
            # a denoiser trained for the clean trajectory sits under the sampler's EpsFromX0 (.net)
            "prediction": "x0" if (c["model_class"] == TemporalUnet.__name__
                                   and any(n.startswith(f"sampler.{comp}.net.") for n in names)) else "eps",
            "dataset": {**(prov.get("data") or {}), "sha256": c.get("dataset_sha256"),
                        "action_semantics": prov.get("action_semantics")},
            "versions": c.get("versions"),
            "_path": source,
        }
        try:
            initial = new_model(c["model_class"], c["model_config"], source).state_dict()
        except (TypeError, ValueError) as exc:
            raise RecoveryError(f"{source}: component {comp!r}: {exc}") from exc
        out[comp]["model"] = out[comp]["ema"] = initial  # replaced by the engine's weights
    return out


def _flat_views(a: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """(whether transposed, row-major values) of a constant: as is, and a matrix's transpose."""
    views = [(False, a.reshape(-1))]
    if a.ndim == 2:
        views.append((True, a.T.reshape(-1)))
    return views


def _offset(f: np.ndarray, v: np.ndarray) -> int | None:
    """Where the values ``v`` sit as a contiguous block of ``f`` (None: nowhere)."""
    for pos in np.flatnonzero(f[: f.size - v.size + 1] == v[0]):
        if np.array_equal(f[pos:pos + v.size], v):
            return int(pos)
    return None


def _locate(params: dict[str, Any], constants: list[tuple[str, np.ndarray]]) -> dict[str, tuple]:
    """parameter name -> (constant index, whether in the constant's transpose, flat offset):
    where each parameter's (distinct) values sit in the reference graph's constants."""
    where: dict[str, tuple] = {}
    for name, p in params.items():
        v = p.detach().numpy().reshape(-1)
        found = next(((idx, flip, pos) for idx, (_, a) in enumerate(constants)
                      if a.dtype == v.dtype and a.size >= v.size
                      for flip, f in _flat_views(a) if (pos := _offset(f, v)) is not None), None)
        if found is None:
            raise RecoveryError(f"parameter {name!r} is in no constant of the exported graph")
        where[name] = found
    return where


def _same_constants(ref: Any, engine: Any) -> dict[str, str] | None:
    """reference constant -> the engine's constant in its place, read off the two graphs'
    operators in order (None where the graphs differ). The exporter merges constants of equal
    value (parameters still at their initial values), so several reference constants may map
    to one of the engine's."""
    def operators(model: Any) -> tuple[set[str], list[tuple[str, list[str]]]]:
        # (constants, [(op, inputs)]) with the exporter's Identity copies of constants resolved
        consts = {i.name for i in model.graph.initializer}
        alias: dict[str, str] = {}
        ops = []
        for n in model.graph.node:
            ins = [alias.get(i, i) for i in n.input]
            if n.op_type == "Identity" and ins[0] in consts:  # chains resolve in order
                alias[n.output[0]] = ins[0]
            else:
                ops.append((n.op_type, ins))
        return consts, ops

    ref_c, ref_ops = operators(ref)
    eng_c, eng_ops = operators(engine)
    if len(ref_ops) != len(eng_ops):
        return None
    out: dict[str, str] = {}
    for (r_op, r_in), (e_op, e_in) in zip(ref_ops, eng_ops, strict=True):
        if r_op != e_op or len(r_in) != len(e_in):
            return None
        for a, b in zip(r_in, e_in, strict=True):
            if a in ref_c and (b not in eng_c or out.setdefault(a, b) != b):
                return None
    return out


def recover_components(path: str | Path) -> dict[str, dict[str, Any]]:
    """component -> checkpoint dict (``export.train.checkpoint`` format, EMA = raw weights =
    the engine's) of the networks inside the ONNX engine ``path``; verified bit for bit."""
    import torch
    from onnx import numpy_helper

    from export.onnx_export import example_inputs, to_onnx
    from export.sampling.base import FusedSampler, StepSampler
    from export.sampling.registry import build_sampler_components
    from planner_runtime.engine_file import (
        EngineError,
        engine_kind,
        load_onnx,
        onnx_graph_sha256,
        sha256_hex,
    )

    path = Path(path)
    try:
        if engine_kind(path) != "onnx":
            raise RecoveryError(f"{path}: a TensorRT plan keeps its weights in the device's format; recover "
                                "the networks from the .onnx engine it was built from")
        model, man = load_onnx(path)
    except EngineError as exc:
        raise RecoveryError(str(exc)) from exc
    manifest = man.to_dict()
    graph = manifest["graph"]["kind"]
    knobs = builder_knobs(manifest)
    n_samples = int(manifest["dims"]["B"])
    engine_consts = {i.name: i for i in model.graph.initializer}
    cks = _checkpoints(manifest, set(engine_consts), str(path))
    try:
        sampler, _ = build_sampler_components(cks, manifest["method"]["name"], graph="sampler",
                                              n_samples=n_samples, **knobs)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecoveryError(f"{path}: the manifest does not rebuild its sampler: {exc}") from exc
    wrap = FusedSampler if graph == "fused" else StepSampler
    n_steps = int(manifest["graph"]["n_steps"])
    warm = int(manifest["diffusion"]["warm_level"])
    args = example_inputs(sampler, graph, n_steps, warm)
    # the graph passes the engine went through (none recorded: an engine from before them)
    passes = list(manifest.get("provenance", {}).get("graph_passes", []))
    params = dict(sampler.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params.values():  # distinct values, so each one is found in one place only
            p.copy_(torch.randn(p.shape, generator=g))
    try:
        ref = to_onnx(wrap(sampler), args, graph, passes=passes)
    except ValueError as exc:  # a pass this version does not have
        raise RecoveryError(f"{path}: {exc}") from exc
    ref_consts = [(i.name, numpy_helper.to_array(i)) for i in ref.graph.initializer]
    same = _same_constants(ref, model)
    if same is None or any(list(a.shape) != list(engine_consts[same[n]].dims) for n, a in ref_consts if n in same):
        raise RecoveryError(f"{path}: the graph rebuilt from its manifest has other constants than the "
                            "engine's (another exporter, torch version or sampler): cannot map its weights")
    where = _locate(params, ref_consts)
    with torch.no_grad():
        for name, (idx, flip, pos) in where.items():
            a = numpy_helper.to_array(engine_consts[same[ref_consts[idx][0]]])
            f = dict(_flat_views(a))[flip]
            params[name].copy_(torch.from_numpy(f[pos:pos + params[name].numel()].copy())
                               .reshape(params[name].shape))
    got = onnx_graph_sha256(to_onnx(wrap(sampler), args, graph, passes=passes))
    want = man.checksums.graph_sha256
    if got != want:
        raise RecoveryError(f"{path}: the recovered networks export to graph {got[:16]}..., not the "
                            f"engine's {want[:16]}...: not recovered")
    origin = {"engine": path.name, "engine_sha256": sha256_hex(path.read_bytes()), "graph_sha256": want}
    for comp, ck in cks.items():
        # the component's network: the one module of its class under the sampler's attribute
        nets = [m for n, m in sampler.named_modules()
                if (n == comp or n.startswith(comp + ".")) and type(m).__name__ == ck["model_class"]]
        if len(nets) != 1:
            raise RecoveryError(f"{path}: component {comp!r} is not one {ck['model_class']} in the sampler")
        state = {k: v.detach().clone() for k, v in nets[0].state_dict().items()}
        ck.update(model=state, ema=state, recovered_from=origin)
    return cks


def write_checkpoints(engine: str | Path, out: str | Path) -> dict[str, Path]:
    """Recover ``engine``'s networks into ``out/<component>.pt``, with the training config the
    manifest records as ``out/config.json`` (as ``train --out`` leaves a folder); component
    -> path."""
    from export.train.checkpoint import save_checkpoint
    from planner_runtime import manifest as mf
    from planner_runtime.engine_file import read_manifest

    cks = recover_components(engine)
    out = Path(out)
    written: dict[str, Path] = {}
    for comp, ck in cks.items():
        p = out / f"{comp}.pt"
        save_checkpoint(p, {k: v for k, v in ck.items() if k != "_path"})
        written[comp] = p
    config = mf.plain(read_manifest(engine).provenance.get("training_config") or {})
    if config:
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.from_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("engine", type=Path, help="an ONNX engine written by `planner-runtime export`")
    p.add_argument("--out", type=Path, required=True, help="folder for the <component>.pt checkpoints")
    args = p.parse_args(argv)
    try:
        written = write_checkpoints(args.engine, args.out)
    except (RecoveryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for comp, path in written.items():
        print(f"wrote {path} ({comp})")
    print(f"verified: these networks export to {args.engine}'s graph, bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())

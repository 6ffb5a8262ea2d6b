"""`planner-runtime export`: trained checkpoints -> ONNX engine(s) with a manifest.

    planner-runtime export --checkpoints runs/go2 --method mpdiffuser --graph fused -o go2.onnx

``--graph both`` writes ``<stem>.fused.onnx`` and ``<stem>.step.onnx``. The robot profile
(observation spec, action semantics, dt) comes from ``--robot`` (go2, or generic for any
other system); provenance (dataset sha256, training configs, checkpoint checksums) from the
checkpoints. torch is imported inside ``run`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "export trained checkpoints to an ONNX engine (fused or step graph) with its manifest"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", required=True, type=Path,
                   help="directory of <component>.pt files (from `planner-runtime train --out`)")
    p.add_argument("--method", default="mpdiffuser",
                   help="sampler: mpdiffuser, planner (planner-only ablation), dadp_f, dadp_i, dmemm")
    p.add_argument("--graph", choices=("fused", "step", "both"), default="fused")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .onnx path")
    p.add_argument("--robot", choices=("auto", "go2", "generic"), default="auto",
                   help="robot profile recorded in the manifest (auto: go2 when S, A, C = 30, 12, 3)")
    p.add_argument("--warm-level", type=int, default=7, help="warm-start level k_w (fused graph unrolls k_w steps)")
    p.add_argument("--cfg-w", type=float, default=2.0, help="default CFG weight (an engine input)")
    p.add_argument("--temperature", type=float, default=0.001, help="noise temperature the runtime applies")
    p.add_argument("--chunk-size", type=int, default=None, help="actions executed per plan (go2: 4)")
    p.add_argument("--dt", type=float, default=None, help="seconds between plan rows (go2: 0.02)")
    p.add_argument("--n-samples", type=int, default=1, help="candidates N (N > 1 adds the ranker)")
    p.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                   help="method knob passed to the sampler builder (JSON value), repeatable")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--json", action="store_true", help="print one JSON object with the manifests")


def _knobs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--knob needs KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _provenance(source: Path) -> dict[str, Any]:
    from export.sampling.registry import load_components
    from planner_runtime.engine_file import sha256_hex

    cks = load_components(source)
    comps = {}
    dataset = None
    semantics: dict[str, Any] = {}
    for name, ck in cks.items():
        path = Path(ck["_path"])
        comps[name] = {"file": path.name, "sha256": sha256_hex(path.read_bytes()),
                       "step": ck.get("step"), "model_class": ck.get("model_class"),
                       "model_config": ck.get("model_config"), "versions": ck.get("versions")}
        dataset = dataset or (ck.get("dataset") or {}).get("sha256")
        sem = (ck.get("dataset") or {}).get("action_semantics")
        if sem is not None:
            semantics[name] = sem
    if len({json.dumps(v, sort_keys=True) for v in semantics.values()}) > 1:
        raise ValueError(f"{source}: the components were trained on data with different action semantics: "
                         f"{sorted(semantics)}")
    first = next(iter(cks.values()))
    return {"dataset_sha256": dataset, "training_config": first.get("config", {}),
            "checkpoints": comps, "action_semantics": next(iter(semantics.values()), None)}


def run(args: argparse.Namespace) -> int:
    from export.onnx_export import ExportError, export_engine, generic_meta, go2_meta
    from export.sampling.registry import build_sampler

    try:
        knobs = _knobs(args.knob)
        sampler = build_sampler(args.checkpoints, args.method, graph="sampler",
                                n_samples=args.n_samples, **knobs)
        dims = (int(sampler.S), int(sampler.A), int(sampler.C))
        prov = _provenance(args.checkpoints)
        # condition history blocks the networks were trained with (robot.observation.HISTORY_BLOCKS)
        history = tuple(e for e in prov["training_config"].get("cond_extras") or () if e != "return")
        try:
            from robot.observation import condition_names

            go2_dims = (30, 12, len(condition_names(history)))
        except ValueError:  # a condition extra the Go2 controller cannot build
            go2_dims = None
        robot = args.robot if args.robot != "auto" else ("go2" if dims == go2_dims else "generic")
        extra: dict[str, Any] = dict(warm_level=args.warm_level, cfg_w=args.cfg_w,
                                     temperature=args.temperature, provenance=prov)
        if args.chunk_size is not None:
            extra["chunk_size"] = args.chunk_size
        if args.dt is not None:
            extra["control_dt"] = args.dt
        meta = (go2_meta(action_semantics=prov["action_semantics"], history=history, **extra) if robot == "go2"
                else generic_meta(*dims, **extra))
        graphs = ("fused", "step") if args.graph == "both" else (args.graph,)
        written: dict[str, Any] = {}
        for g in graphs:
            out = args.output
            if len(graphs) > 1:
                out = out.with_name(f"{out.stem}.{g}{out.suffix or '.onnx'}")
            m = export_engine(sampler, out, graph=g, meta=meta, exporter=args.exporter, opset=args.opset)
            written[str(out)] = m
            if not args.json:
                print(f"wrote {out}: {m['method']['name']} {g} graph, "
                      f"S={m['dims']['S']} A={m['dims']['A']} C={m['dims']['C']} H={m['dims']['H']} "
                      f"B={m['dims']['B']}, sha256 {m['checksums']['graph_sha256'][:16]}...")
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"engines": written}))
    return 0

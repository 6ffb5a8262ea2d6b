"""`planner-runtime export`: trained checkpoints -> ONNX engine(s) with a manifest.

    planner-runtime export --checkpoints runs/go2 --method mpdiffuser --graph fused -o go2.onnx

``--graph both`` writes ``<stem>.fused.onnx`` and ``<stem>.step.onnx``. torch is imported
inside ``run`` only.

What goes into the manifest, and from where:

- components: exactly the checkpoints the method's sampler is built from
  (``export.sampling.registry.build_sampler_components``: e.g. planner + dynamics for
  MPDiffuser with N = 1, plus the ranker for N > 1); each is recorded in
  ``provenance.checkpoints`` with its file, sha256, training step and total steps. Other
  ``*.pt`` files in the folder are ignored (and listed in ``provenance.ignored``).
- finality: a component whose step is below the total steps of its run (still training, or
  stopped early), or that is older than the run's ``config.json`` (the run was restarted,
  with a new ``run_id``, and has not saved it yet), is refused unless ``--force``; forced,
  the manifest lists what was wrong in ``provenance.forced``.
- the system: control dt, state / action / condition names and the robot name come from the
  training data (the checkpoints' "dataset" block, ``export.data.WindowData.provenance``).
  ``--dt`` that contradicts the data's dt is refused unless ``--force``; forced (or given
  where the data recorded none) it is recorded in the manifest's ``overrides``.
- the PD gains the engine is executed with: the data's (its action semantics) unless ``--kp``
  / ``--kd`` give others (Go2 engines); a value that differs from the data's is recorded in the
  manifest's ``overrides`` (``action.kp``, ``action.kd``) and in the action block's ``source``,
  and checked against the robot profile's gain ranges like the data's.
- the robot profile: ``--robot auto`` picks go2 when the data says robot "go2" (or, for
  data that recorded no robot, when S, A, C fit the Go2's) and generic otherwise; the Go2
  path checks that the data's names are the Go2 observation builder's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "export trained checkpoints to an ONNX engine (fused or step graph) with its manifest"
DATA_KEYS = ("dt", "robot", "state_names", "action_names", "condition_names")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", required=True, type=Path,
                   help="directory of <component>.pt files (from `planner-runtime train --out`), or an "
                        "ONNX engine: the networks inside it (export/from_engine.py), e.g. the embedded "
                        "planner_runtime/engines/go2.onnx")
    p.add_argument("--method", default=None,
                   help="sampler: mpdiffuser (default), planner (planner-only ablation), dadp_f, dadp_i, dmemm")
    p.add_argument("--graph", choices=("fused", "step", "both"), default="fused")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .onnx path")
    p.add_argument("--robot", choices=("auto", "go2", "generic"), default="auto",
                   help="robot profile recorded in the manifest (auto: go2 when the data's robot is go2)")
    p.add_argument("--warm-level", type=int, default=None,
                   help="warm-start level k_w (fused graph unrolls k_w steps; default 7)")
    p.add_argument("--cfg-w", type=float, default=None, help="default CFG weight (an engine input; default 2.0)")
    p.add_argument("--temperature", type=float, default=None,
                   help="noise temperature the runtime applies (default 0.001)")
    p.add_argument("--chunk-size", type=int, default=None, help="actions executed per plan (default 4)")
    p.add_argument("--dt", type=float, default=None,
                   help="seconds between plan rows; default: the training data's dt (a different "
                        "value is refused unless --force, then recorded as an override)")
    p.add_argument("--kp", type=float, default=None,
                   help="PD stiffness the engine is executed with (Go2 engines); default: the training "
                        "data's. A different value is recorded in the manifest's overrides")
    p.add_argument("--kd", type=float, default=None,
                   help="PD damping the engine is executed with; default: the training data's (recorded "
                        "as an override when different)")
    p.add_argument("--force", action="store_true",
                   help="export anyway: a --dt that contradicts the data, an unfinished or stale "
                        "checkpoint, names that differ from the robot profile (all recorded in the manifest)")
    p.add_argument("--n-samples", type=int, default=None, help="candidates N (N > 1 adds the ranker; default 1)")
    p.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                   help="method knob passed to the sampler builder (JSON value), repeatable")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-graph-passes", action="store_true",
                   help="write the graph as traced, without export.graph_passes' exact rewrites "
                        "(GroupNorm affines as BatchNormalization); for comparing the two")
    p.add_argument("--json", action="store_true", help="print one JSON object with the manifests")


# the sampling settings an export takes when the command line leaves them out; exported from
# an engine file, that engine's own settings come first (``source_settings``)
DEFAULTS: dict[str, Any] = {"method": "mpdiffuser", "warm_level": 7, "cfg_w": 2.0, "temperature": 0.001,
                            "n_samples": 1}


def source_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the sampling settings ``args`` leaves out (None) and return the knobs to build with.

    From an engine file (``--checkpoints ENGINE.onnx``) they are that engine's: its method,
    warm level, CFG weight, temperature, chunk size, candidates, sampling knobs (``--knob``
    entries replace single ones) and the PD gains it was exported with where they differ from
    its data's; so ``export --checkpoints go2.onnx --graph step`` is the same engine as a step
    graph. From checkpoints they are ``DEFAULTS``. A setting ``args`` does not have at all
    (a command without that option, as ``bench``) is added to it."""
    from export.from_engine import builder_knobs, is_engine_file

    knobs = parse_knobs(args.knob)
    if is_engine_file(args.checkpoints) and Path(args.checkpoints).is_file():
        from planner_runtime.engine_file import read_manifest

        man = read_manifest(args.checkpoints)
        own = {"method": man.method.name, "warm_level": man.diffusion.warm_level, "cfg_w": man.diffusion.cfg_w,
               "temperature": man.diffusion.temperature, "n_samples": man.dims.B,
               "chunk_size": man.control.chunk_size}
        for key in ("kp", "kd"):  # executed gains set at that export, not the data's
            over = man.overrides.get(f"action.{key}")
            if over is not None:
                own[key] = over["value"]
        for key, value in own.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        knobs = {**builder_knobs(man.to_dict()), **knobs}
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return knobs


def execution_gains(semantics: dict[str, Any] | None, kp: float | None,
                    kd: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data's action semantics with the PD gains ``kp`` / ``kd`` the engine is to be
    executed with (None: the data's), and the manifest overrides recording each gain that
    differs from the data's. Gains the Go2 controller would refuse are refused here."""
    from export.onnx_export import ExportError
    from robot.actions import ActionSemantics

    if semantics is None:
        raise ExportError("--kp/--kd: the training data recorded no action semantics, so there are no "
                          "data gains to replace; re-collect the data with this project's `collect`")
    over: dict[str, Any] = {}
    for name, value in (("kp", kp), ("kd", kd)):
        data = float(semantics[name])
        if value is not None and not abs(value - data) <= 1e-9 * max(1.0, data):  # NaN differs too
            over[f"action.{name}"] = {"value": float(value), "data": data, "by": f"--{name} {value:g}"}
    try:
        executed = ActionSemantics.from_dict(semantics, "--kp/--kd").with_gains(kp, kd)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    return {**semantics, "kp": executed.kp, "kd": executed.kd}, over


def parse_knobs(items: list[str]) -> dict[str, Any]:
    """``--knob KEY=VALUE`` items -> knobs (JSON values, else the string)."""
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


def _run_config(source: Path) -> dict[str, Any] | None:
    """The run's ``config.json`` next to the checkpoints (None: none, or not a directory)."""
    path = source / "config.json" if source.is_dir() else None
    if path is None or not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg if isinstance(cfg, dict) else None


def finality_problems(name: str, ck: dict[str, Any], run_cfg: dict[str, Any] | None,
                      run_cfg_mtime: float | None) -> list[str]:
    """Why checkpoint ``ck`` (component ``name``) is not a finished training result."""
    out: list[str] = []
    cfg = ck.get("config") or {}
    step, total = ck.get("step"), cfg.get("steps")
    if isinstance(step, int) and isinstance(total, int) and step < total:
        out.append(f"{name}: step {step} of {total} (still training or stopped early)")
    if run_cfg is None:
        return out
    want = run_cfg.get("components")
    if isinstance(want, str):
        want = [w for w in want.split(",") if w]
    if want and name not in want:  # the latest run did not train this component
        return out
    section = run_cfg.get(name) if isinstance(run_cfg.get(name), dict) else {}
    run_total = section.get("steps", run_cfg.get("steps"))
    if isinstance(step, int) and isinstance(run_total, int) and step < run_total and not out:
        out.append(f"{name}: step {step} of the run's {run_total} (config.json; still training)")
    run_id, ck_run = run_cfg.get("run_id"), cfg.get("run_id")
    if run_id is not None and ck_run is not None:
        if run_id != ck_run:
            out.append(f"{name}: saved by run {ck_run}, older than the run's config.json (run {run_id}): "
                       "that run has not saved this component yet")
    elif run_cfg_mtime is not None and Path(ck["_path"]).stat().st_mtime < run_cfg_mtime:
        out.append(f"{name}: {Path(ck['_path']).name} is older than the run's config.json")
    return out


def _data_block(used: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the training data said about the system (dt, names, robot), agreed by every used
    component; keys the data did not record are absent."""
    seen: dict[str, tuple[str, Any]] = {}
    for name, ck in used.items():
        ds = ck.get("dataset") or {}
        for k in DATA_KEYS:
            v = ds.get(k)
            if v is None:
                continue
            if k in seen and seen[k][1] != v:
                raise ValueError(f"the components were trained on data of different systems: {k} "
                                 f"{seen[k][1]!r} ({seen[k][0]}) vs {v!r} ({name})")
            seen.setdefault(k, (name, v))
    return {k: v for k, (_, v) in seen.items()}


def provenance(source: Path, used: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(the manifest's provenance block, the finality problems found) for the components
    ``used``. Refusing is the caller's decision."""
    from planner_runtime.engine_file import sha256_hex

    run_cfg = _run_config(source)
    cfg_path = source / "config.json"
    run_mtime = cfg_path.stat().st_mtime if run_cfg is not None else None
    comps: dict[str, Any] = {}
    problems: list[str] = []
    semantics: dict[str, Any] = {}
    for name, ck in used.items():
        path = Path(ck["_path"])
        cfg = ck.get("config") or {}
        comps[name] = {"file": path.name, "sha256": sha256_hex(path.read_bytes()),
                       "step": ck.get("step"), "total_steps": cfg.get("steps"),
                       "run_id": cfg.get("run_id"), "model_class": ck.get("model_class"),
                       "model_config": ck.get("model_config"), "versions": ck.get("versions"),
                       "dataset_sha256": (ck.get("dataset") or {}).get("sha256")}
        problems += finality_problems(name, ck, run_cfg, run_mtime)
        sem = (ck.get("dataset") or {}).get("action_semantics")
        if sem is not None:
            semantics[name] = sem
    if len({json.dumps(v, sort_keys=True) for v in semantics.values()}) > 1:
        raise ValueError(f"{source}: the components were trained on data with different action semantics: "
                         f"{sorted(semantics)}")
    first = next(iter(used.values()))
    ignored: list[str] = []
    if source.is_dir():
        ignored = sorted(p.name for p in source.glob("*.pt")
                         if p.resolve() not in {Path(ck["_path"]).resolve() for ck in used.values()})
    prov = {"dataset_sha256": (first.get("dataset") or {}).get("sha256"),
            "training_config": first.get("config", {}), "checkpoints": comps,
            "ignored": ignored, "action_semantics": next(iter(semantics.values()), None),
            "data": _data_block(used)}
    if first.get("recovered_from"):  # the networks came out of an engine file (export.from_engine)
        prov["recovered_from"] = first["recovered_from"]
    return prov, problems


def _go2_name_problems(data: dict[str, Any], history: tuple[str, ...]) -> list[str]:
    """Where the data's names differ from the Go2 observation builder's."""
    from robot.observation import ACTION_NAMES, STATE_NAMES, condition_names

    want = {"state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES),
            "condition_names": list(condition_names(history))}
    return [f"the data's {k} differ from the Go2 observation builder's" for k, v in want.items()
            if data.get(k) is not None and list(data[k]) != v]


def run(args: argparse.Namespace) -> int:
    from export.data import HISTORY_EXTRAS
    from export.graph_passes import DEFAULT_PASSES
    from export.onnx_export import ExportError, export_engine, generic_meta, go2_meta
    from export.sampling.registry import build_sampler_components
    from export.train.checkpoint import CheckpointError
    from planner_runtime.engine import EngineError

    try:
        knobs = source_settings(args)
        sampler, used = build_sampler_components(args.checkpoints, args.method, graph="sampler",
                                                 n_samples=args.n_samples, **knobs)
        dims = (int(sampler.S), int(sampler.A), int(sampler.C_in))
        prov, problems = provenance(args.checkpoints, used)
        data = prov["data"]
        # condition history blocks the networks were trained with (robot.observation.HISTORY_BLOCKS)
        history = tuple(e for e in prov["training_config"].get("cond_extras") or () if e in HISTORY_EXTRAS)
        if sampler.targets and data.get("condition_names") is not None:
            # the targets fixed in the graph are not inputs: the engine's layout lacks them
            data = {**data, "condition_names": [n for n in data["condition_names"] if n not in sampler.targets]}
        try:
            from robot.observation import condition_names

            go2_dims = (30, 12, len(condition_names(history)))
        except ValueError:  # a condition extra the Go2 controller cannot build
            go2_dims = None
        if args.robot != "auto":
            robot = args.robot
        elif data.get("robot") is not None:
            robot = "go2" if data["robot"] == "go2" and dims == go2_dims else "generic"
        else:
            robot = "go2" if dims == go2_dims else "generic"
        if robot == "go2":
            problems += _go2_name_problems(data, history)
        overrides: dict[str, Any] = {}
        data_dt = data.get("dt")
        control_dt, dt_source = data_dt, "dataset"
        if args.dt is not None:
            if data_dt is not None and abs(float(args.dt) - float(data_dt)) > 1e-9 * max(1.0, float(data_dt)):
                if not args.force:
                    raise ExportError(
                        f"--dt {args.dt} contradicts the training data's control dt {data_dt} s: the "
                        f"warm start would shift plans by the wrong number of rows and every action "
                        f"would be stamped at the wrong time. Leave --dt out (the data's dt is used), "
                        f"or pass --force to record {args.dt} as an override")
                overrides["control.dt"] = {"value": float(args.dt), "data": float(data_dt),
                                           "by": f"--dt {args.dt} --force"}
                control_dt, dt_source = float(args.dt), f"override (--dt, forced; the data says {data_dt})"
            elif data_dt is None:
                overrides["control.dt"] = {"value": float(args.dt), "data": None, "by": f"--dt {args.dt}"}
                control_dt, dt_source = float(args.dt), "--dt (the data recorded no dt)"
        semantics = prov["action_semantics"]
        if args.kp is not None or args.kd is not None:
            if robot != "go2":
                raise ExportError("--kp/--kd set the PD gains of a Go2 engine's action semantics; this "
                                  f"engine's robot profile is {robot!r}, which has none")
            semantics, gain_overrides = execution_gains(semantics, args.kp, args.kd)
            overrides.update(gain_overrides)
        if problems and not args.force:
            raise ExportError("refusing to export: " + "; ".join(problems) + ". Pass --force to export "
                              "anyway (the manifest records it in provenance.forced)")
        if problems:
            prov["forced"] = list(problems)
        extra: dict[str, Any] = dict(warm_level=args.warm_level, cfg_w=args.cfg_w,
                                     temperature=args.temperature, provenance=prov,
                                     overrides=overrides)
        if args.chunk_size is not None:
            extra["chunk_size"] = args.chunk_size
        if control_dt is not None:
            extra.update(control_dt=float(control_dt), dt_source=dt_source)
        if robot == "go2":
            meta = go2_meta(action_semantics=semantics, history=history, **extra)
        else:
            if control_dt is None:
                raise ExportError("the checkpoints' data recorded no control dt (trained before it was "
                                  "recorded): give it with --dt SECONDS")
            meta = generic_meta(*dims, state_names=data.get("state_names"),
                                action_names=data.get("action_names"),
                                condition_names=data.get("condition_names"),
                                robot=data.get("robot"), **extra)
        graphs = ("fused", "step") if args.graph == "both" else (args.graph,)
        written: dict[str, Any] = {}
        for g in graphs:
            out = args.output
            if len(graphs) > 1:
                out = out.with_name(f"{out.stem}.{g}{out.suffix or '.onnx'}")
            m = export_engine(sampler, out, graph=g, meta=meta, exporter=args.exporter, opset=args.opset,
                              passes=() if args.no_graph_passes else DEFAULT_PASSES)
            written[str(out)] = m.to_dict()
            if not args.json:
                d = m.dims
                print(f"wrote {out}: {m.method.name} {g} graph, "
                      f"S={d.S} A={d.A} C={d.C} H={d.H} "
                      f"B={d.B}, dt {m.control.dt} s ({m.control.dt_source}), "
                      f"components {', '.join(m.provenance['checkpoints'])}, "
                      f"sha256 {m.checksums.graph_sha256[:16]}...")
                for key, o in m.overrides.items():
                    print(f"  override {key} = {o['value']} (the data says {o['data']})")
                for pr in m.provenance.get("forced", ()):
                    print(f"  forced: {pr}")
    except (ExportError, CheckpointError, EngineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"engines": written}))
    return 0

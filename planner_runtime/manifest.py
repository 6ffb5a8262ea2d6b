"""The engine manifest: what an engine file says about itself, and the checks on it.

Every engine (``.onnx`` or TensorRT ``.plan``) carries one manifest, a plain JSON object
(no Python-specific types), so the runtime, the controller and ``planner-runtime info``
can refuse a mismatched engine before it drives a robot. In an ONNX file it is stored as
the metadata property ``planner_runtime.manifest``; in a ``.plan`` container it is the
header (see ``planner_runtime/engine_file.py``).

Schema, format version 1 (``validate`` enforces it and names the bad field):

    format               "planner-runtime-engine"
    format_version       1
    method               {"name": str, "knobs": {str: plain value}}
                         e.g. name "mpdiffuser", knobs {"alternate": true, "n_samples": 1, ...}
    graph                {"kind": "fused" | "step",
                          "n_steps": int (fused: unrolled reverse steps; step: 1),
                          "inputs": [names], "outputs": [names]}   (engine.py names)
    dims                 {"S": int, "A": int, "C": int, "H": int, "B": int (candidates N)}
    diffusion            {"K": int, "schedule": "cosine" | "linear", "warm_level": int,
                          "cold_levels": [int], "warm_levels": [int], "cfg_w": float,
                          "temperature": float, "clip": [lo, hi] | null}
    normalizer           {"kind": str, ...per-dimension statistics as lists of numbers}
    observation          an observation spec (robot.observation.observation_spec() shape):
                         {"version", "robot", "state_names", "condition_names",
                          "action_names", "joint_order", "default_joint_pos", "units"}
    action               {"joint_names": [str], "default_joint_pos": [float],
                          "scale": float | [float] (per joint), "kp": float, "kd": float
                          (the PD gains the data was collected with; optional for systems
                          without them), "name", "source"}   target = default + scale * a
    control              {"dt": float (seconds between plan rows), "chunk_size": int,
                          "dt_source": str (optional: "dataset", "go2 profile ...", "override ...")}
    overrides            (optional) {"<manifest field>": {"value": v, "data": what the training
                          data said (null: it said nothing), "by": how}}: every value that
                          replaces or contradicts the data (e.g. ``export --dt X --force``)
    robot                {"name": str, "profile": robot profile dict (see check_profile) | null}
    provenance           {"dataset_sha256": str | null, "training_config": dict,
                          "versions": {pkg: version}, "created_utc": str, "checkpoints": {...}}
    checksums            {"graph_sha256": str}  sha256 over the graph without its metadata
                         (ONNX: ``onnx_graph_sha256``); a ``.plan`` adds "plan_sha256"
    tensorrt             (``.plan`` only) {"version", "fp16", "device", "onnx_graph_sha256"}

A robot profile (what ``check_profile`` compares against) is a plain dict written by the
robot side, e.g. from ``robot.go2_constants``:

    {"name": "go2", "state_dim": 30, "action_dim": 12, "condition_dim": 3,
     "joint_names": [...SDK order...], "policy_dt": 0.02, "state_names": [...] (optional), "condition_names": [...] (optional),
     "control_dt": 0.002 (optional), "action": {...} (optional: what the robot can execute, see profile_problems)}

``engine_identity`` is the short form a controller logs and compares on every (re)claim of
the planner service: graph checksum, method, provenance id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from planner_runtime.engine import FUSED_OUTPUTS, STEP_OUTPUTS, graph_inputs

FORMAT = "planner-runtime-engine"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ONNX_METADATA_KEY = "planner_runtime.manifest"
GRAPH_KINDS = ("fused", "step")



class ManifestError(ValueError):
    """A manifest is missing, malformed, of an unknown version, or mismatched."""


def _get(d: Mapping[str, Any], key: str, path: str) -> Any:
    if not isinstance(d, Mapping):
        raise ManifestError(f"manifest field {path!r} must be an object, got {type(d).__name__}")
    if key not in d:
        raise ManifestError(f"manifest is missing field {path + '.' + key if path else key!r}")
    return d[key]


def _int(d: Mapping[str, Any], key: str, path: str, lo: int = 0) -> int:
    v = _get(d, key, path)
    name = f"{path}.{key}"
    if isinstance(v, bool) or not isinstance(v, int):
        raise ManifestError(f"manifest field {name!r} must be an integer, got {v!r}")
    if v < lo:
        raise ManifestError(f"manifest field {name!r} must be >= {lo}, got {v}")
    return v


def _num(d: Mapping[str, Any], key: str, path: str) -> float:
    v = _get(d, key, path)
    name = f"{path}.{key}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ManifestError(f"manifest field {name!r} must be a finite number, got {v!r}")
    return float(v)


def _list(d: Mapping[str, Any], key: str, path: str, n: int | None = None,
          item: type | tuple[type, ...] | None = None) -> list:
    v = _get(d, key, path)
    name = f"{path}.{key}"
    if not isinstance(v, list):
        raise ManifestError(f"manifest field {name!r} must be a list, got {type(v).__name__}")
    if n is not None and len(v) != n:
        raise ManifestError(f"manifest field {name!r} must have {n} entries, got {len(v)}")
    if item is not None:
        for i, e in enumerate(v):
            if isinstance(e, bool) or not isinstance(e, item):
                raise ManifestError(f"manifest field {name}[{i}] has the wrong type: {e!r}")
    return v


def _levels(d: Mapping[str, Any], key: str, K: int, n: int | None) -> list[int]:
    lv = _list(d, key, "diffusion", n=None if n is None else n + 1, item=int)
    if len(lv) < 2 or lv[-1] != 0 or lv[0] > K or any(b >= a for a, b in zip(lv, lv[1:], strict=False)):
        raise ManifestError(
            f"manifest field 'diffusion.{key}' must decrease strictly from <= K={K} to 0, got {lv}"
        )
    return lv


def validate(manifest: Any) -> dict[str, Any]:
    """Check a manifest's structure and internal consistency; return it unchanged.

    Raises ``ManifestError`` naming the first bad field. Unknown extra fields are kept
    (forward compatible within a version); an unknown ``format_version`` is refused.
    """
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    fmt = _get(manifest, "format", "")
    if fmt != FORMAT:
        raise ManifestError(f"manifest field 'format' must be {FORMAT!r}, got {fmt!r}")
    ver = _get(manifest, "format_version", "")
    if ver not in SUPPORTED_VERSIONS:
        raise ManifestError(
            f"unknown engine format_version {ver!r}; this planner-runtime reads {SUPPORTED_VERSIONS}"
            " (re-export the engine with a matching planner-runtime)"
        )
    method = _get(manifest, "method", "")
    if not isinstance(_get(method, "name", "method"), str) or not method["name"]:
        raise ManifestError("manifest field 'method.name' must be a non-empty string")
    if not isinstance(_get(method, "knobs", "method"), Mapping):
        raise ManifestError("manifest field 'method.knobs' must be an object")

    dims = _get(manifest, "dims", "")
    S = _int(dims, "S", "dims", 1)
    A = _int(dims, "A", "dims", 1)
    C = _int(dims, "C", "dims", 0)
    _int(dims, "H", "dims", 1)
    _int(dims, "B", "dims", 1)

    graph = _get(manifest, "graph", "")
    kind = _get(graph, "kind", "graph")
    if kind not in GRAPH_KINDS:
        raise ManifestError(f"manifest field 'graph.kind' must be one of {GRAPH_KINDS}, got {kind!r}")
    n = _int(graph, "n_steps", "graph", 1)
    want_out = FUSED_OUTPUTS if kind == "fused" else STEP_OUTPUTS
    allowed_in = graph_inputs(kind)
    if tuple(_list(graph, "inputs", "graph", item=str)) not in allowed_in:
        raise ManifestError(f"manifest field 'graph.inputs' must be {list(allowed_in[0])} for a {kind} "
                            f"graph (or {list(allowed_in[1])}, exported before committed-prefix inputs)")
    if tuple(_list(graph, "outputs", "graph", item=str)) != want_out:
        raise ManifestError(f"manifest field 'graph.outputs' must be {list(want_out)} for a {kind} graph")

    diff = _get(manifest, "diffusion", "")
    K = _int(diff, "K", "diffusion", 1)
    sched = _get(diff, "schedule", "diffusion")
    if sched not in ("cosine", "linear"):
        raise ManifestError(f"manifest field 'diffusion.schedule' is unknown: {sched!r}")
    kw = _int(diff, "warm_level", "diffusion", 1)
    if kw > K:
        raise ManifestError(f"manifest field 'diffusion.warm_level' ({kw}) exceeds K ({K})")
    fixed = n if kind == "fused" else None  # a fused graph runs exactly n steps
    _levels(diff, "cold_levels", K, fixed)
    wl = _levels(diff, "warm_levels", K, fixed)
    if wl[0] != kw:
        raise ManifestError(f"manifest field 'diffusion.warm_levels' must start at warm_level {kw}, got {wl}")
    _num(diff, "cfg_w", "diffusion")
    if _num(diff, "temperature", "diffusion") < 0:
        raise ManifestError("manifest field 'diffusion.temperature' must be >= 0")
    clip = _get(diff, "clip", "diffusion")
    if clip is not None:
        c = _list(diff, "clip", "diffusion", n=2, item=(int, float))
        if not c[0] < c[1]:
            raise ManifestError(f"manifest field 'diffusion.clip' must be [lo, hi] with lo < hi, got {c}")

    norm = _get(manifest, "normalizer", "")
    if not isinstance(norm, Mapping) or not isinstance(norm.get("kind"), str):
        raise ManifestError("manifest field 'normalizer' must be an object with a string 'kind'")

    obs = _get(manifest, "observation", "")
    if len(_list(obs, "state_names", "observation", item=str)) != S:
        raise ManifestError(f"manifest field 'observation.state_names' must have S={S} names")
    if len(_list(obs, "condition_names", "observation", item=str)) != C:
        raise ManifestError(f"manifest field 'observation.condition_names' must have C={C} names")
    if len(_list(obs, "action_names", "observation", item=str)) != A:
        raise ManifestError(f"manifest field 'observation.action_names' must have A={A} names")

    act = _get(manifest, "action", "")
    names = _list(act, "joint_names", "action", item=str)
    _list(act, "default_joint_pos", "action", n=len(names), item=(int, float))
    if isinstance(act.get("scale"), list):
        _list(act, "scale", "action", n=len(names), item=(int, float))
    else:
        _num(act, "scale", "action")
    for gain in ("kp", "kd"):
        if gain in act and _num(act, gain, "action") < 0:
            raise ManifestError(f"manifest field 'action.{gain}' must be >= 0")

    ctl = _get(manifest, "control", "")
    if _num(ctl, "dt", "control") <= 0:
        raise ManifestError("manifest field 'control.dt' must be > 0")
    chunk = _int(ctl, "chunk_size", "control", 1)
    if chunk > dims["H"]:
        raise ManifestError(f"manifest field 'control.chunk_size' ({chunk}) exceeds H ({dims['H']})")

    over = manifest.get("overrides", {})
    if not isinstance(over, Mapping) or not all(isinstance(v, Mapping) and "value" in v for v in over.values()):
        raise ManifestError("manifest field 'overrides' must map field names to {'value': ..., 'data': ...}")

    robot = _get(manifest, "robot", "")
    if not isinstance(_get(robot, "name", "robot"), str):
        raise ManifestError("manifest field 'robot.name' must be a string")
    if not isinstance(_get(manifest, "provenance", ""), Mapping):
        raise ManifestError("manifest field 'provenance' must be an object")
    sums = _get(manifest, "checksums", "")
    gs = _get(sums, "graph_sha256", "checksums")
    if not (isinstance(gs, str) and len(gs) == 64):
        raise ManifestError("manifest field 'checksums.graph_sha256' must be a 64-hex sha256")
    return dict(manifest)


def to_json(manifest: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys): byte-stable for the same manifest."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)


def from_json(text: str | bytes) -> dict[str, Any]:
    """Parse and validate a manifest; a broken JSON string is a ManifestError too."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"engine manifest is not valid JSON: {exc}") from exc
    return validate(obj)


def _close(a: Sequence[float], b: Sequence[float], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b, strict=False))


def check_profile(manifest: Mapping[str, Any], profile: Mapping[str, Any]) -> None:
    """Refuse an engine that does not fit a robot profile (schema in the module docstring).

    Compares dimensions, joint order, default pose, action scale, control dt and, when the
    profile lists them, state and condition names. Raises ``ManifestError`` listing every
    mismatch, so one run tells the user all that is wrong.
    """
    problems = profile_problems(manifest, profile)
    if problems:
        raise ManifestError("engine does not match the robot profile: " + "; ".join(problems))


def profile_problems(manifest: Mapping[str, Any], profile: Any) -> list[str]:
    """Every way an engine does not fit a robot profile (empty: it fits).

    The profile may come from a peer (the service checks the one a controller sends in its
    ``hello`` / ``claim``), so a malformed one is reported as a problem, never raised.
    Besides the keys in the module docstring a robot may state what it can execute:
    ``control_dt`` (its command period: the engine's dt must be a whole multiple of it) and
    ``action`` {"type": "joint_position", "joint_pos_lower": [..], "joint_pos_upper": [..],
    "kp_range": [lo, hi], "kd_range": [lo, hi], "scale_range": [lo, hi]}: the engine's
    default pose must lie within the joint range, its PD gains and action scale within the
    ranges."""
    if not isinstance(profile, Mapping):
        return [f"the robot profile must be a map, got {type(profile).__name__}"]
    try:
        return _profile_problems(manifest, profile)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        return [f"malformed robot profile ({type(exc).__name__}: {exc})"]


def _profile_problems(manifest: Mapping[str, Any], profile: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    dims = manifest["dims"]
    for key, dim in (("state_dim", "S"), ("action_dim", "A"), ("condition_dim", "C")):
        if key in profile and int(profile[key]) != int(dims[dim]):
            problems.append(f"{dim}: engine has {dims[dim]}, profile {profile.get('name')!r} has {profile[key]}")
    act = manifest["action"]
    if "joint_names" in profile and list(profile["joint_names"]) != list(act["joint_names"]):
        problems.append(
            f"joint order: engine {list(act['joint_names'])} != profile {list(profile['joint_names'])}"
        )
    dt = float(manifest["control"]["dt"])
    if "policy_dt" in profile and not _close([profile["policy_dt"]], [dt], 1e-9):
        problems.append(f"control dt: engine {dt} s != profile {profile['policy_dt']} s")
    if "control_dt" in profile:
        cdt = float(profile["control_dt"])
        ratio = dt / cdt if cdt > 0 and math.isfinite(cdt) else float("nan")
        if not (math.isfinite(ratio) and ratio >= 1 and abs(ratio - round(ratio)) < 1e-6):
            problems.append(f"engine dt {dt} s is not a whole number of the robot's control periods ({cdt} s)")
    obs = manifest["observation"]
    for key in ("state_names", "condition_names"):
        if key in profile and list(profile[key]) != list(obs[key]):
            problems.append(f"observation {key} differ from the profile's (order or content)")
    if "name" in profile and manifest["robot"]["name"] != profile["name"]:
        problems.append(f"robot: engine was made for {manifest['robot']['name']!r}, profile is {profile['name']!r}")
    pa = profile.get("action")
    if pa is not None:
        if not isinstance(pa, Mapping):
            return [*problems, f"profile 'action' must be a map, got {type(pa).__name__}"]
        problems += _action_problems(act, pa)
    return problems


def _action_problems(act: Mapping[str, Any], pa: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    kind = pa.get("type", "joint_position")
    if kind != "joint_position":
        out.append(f"the robot executes {kind!r} actions; engines here are joint-position targets")
    n = len(act["joint_names"])
    pose = [float(v) for v in act["default_joint_pos"]]
    lo, hi = pa.get("joint_pos_lower"), pa.get("joint_pos_upper")
    if lo is not None and hi is not None:
        lo, hi = [float(v) for v in lo], [float(v) for v in hi]
        if len(lo) != n or len(hi) != n:
            out.append(f"profile joint limits have {len(lo)}/{len(hi)} entries, the engine {n} joints")
        elif any(not a <= p <= b for p, a, b in zip(pose, lo, hi, strict=True)):
            out.append("the engine's default_joint_pos lies outside the robot's joint limits")
    scale = act["scale"] if isinstance(act["scale"], list) else [act["scale"]] * n
    for key, vals, what in (("scale_range", [float(v) for v in scale], "action scale"),
                            ("kp_range", [float(act["kp"])] if "kp" in act else None, "kp"),
                            ("kd_range", [float(act["kd"])] if "kd" in act else None, "kd")):
        rng = pa.get(key)
        if rng is None:
            continue
        a, b = (float(v) for v in rng)
        if vals is None:
            out.append(f"the engine records no {what} (exported before PD gains were recorded: re-export it)")
        elif any(not a <= v <= b for v in vals):
            out.append(f"engine {what} {vals if len(vals) > 1 else vals[0]} outside the robot's range [{a}, {b}]")
    return out


def engine_identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Who an engine is, in a few stable fields a controller can log, compare and pin: the
    graph checksum (and the TensorRT plan's), method, format version, robot, and the
    provenance id (the sha256 of the dataset it was trained on, and when it was made)."""
    sums = manifest.get("checksums") or {}
    prov = manifest.get("provenance") or {}
    method = manifest.get("method") or {}
    return {
        "graph_sha256": sums.get("graph_sha256"),
        "plan_sha256": sums.get("plan_sha256"),
        "method": method.get("name"),
        "format_version": manifest.get("format_version"),
        "robot": (manifest.get("robot") or {}).get("name"),
        "dataset_sha256": prov.get("dataset_sha256"),
        "created_utc": prov.get("created_utc"),
    }


def summary(manifest: Mapping[str, Any]) -> str:
    """A few human-readable lines for logs and ``planner-runtime info``."""
    d, g, f = manifest["dims"], manifest["graph"], manifest["diffusion"]
    return "\n".join([
        f"method      {manifest['method']['name']}  knobs {json.dumps(manifest['method']['knobs'], sort_keys=True)}",
        f"graph       {g['kind']} (n_steps {g['n_steps']})",
        f"dims        S={d['S']} A={d['A']} C={d['C']} H={d['H']} B={d['B']}",
        f"diffusion   K={f['K']} {f['schedule']} warm_level={f['warm_level']} cfg_w={f['cfg_w']} "
        f"temperature={f['temperature']} clip={f['clip']}",
        f"levels      cold {f['cold_levels']}  warm {f['warm_levels']}",
        f"robot       {manifest['robot']['name']}  dt={manifest['control']['dt']} s  "
        f"chunk={manifest['control']['chunk_size']}  action scale={manifest['action']['scale']}",
        f"checksum    graph sha256 {manifest['checksums']['graph_sha256']}",
    ])

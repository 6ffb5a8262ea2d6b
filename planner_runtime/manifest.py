"""The engine manifest: what an engine file says about itself, parsed once into a typed object.

Every engine (``.onnx`` or TensorRT ``.plan``) carries one manifest, a plain JSON object
(no Python-specific types), so the runtime, the controller and ``planner-runtime info``
can refuse a mismatched engine before it drives a robot. In an ONNX file it is stored as
the metadata property ``planner_runtime.manifest``; in a ``.plan`` container it is the
header (see ``planner_runtime/engine_file.py``).

API: ``parse(obj)`` (or ``Manifest.parse``) checks a JSON object and returns a frozen
``Manifest``; ``from_json(text)`` does the same from the stored text. Code reads fields as
attributes (``m.dims.S``, ``m.control.dt``, ``m.action.kp``, ``m.graph.inputs``); lists are
tuples and free-form blocks (``method.knobs``, ``normalizer``, ``provenance``,
``overrides``, ``tensorrt``, ``robot.profile``, the rest of ``observation``) read-only
mappings. ``m.to_dict()`` / ``m.to_json()`` give back exactly the JSON object that was
parsed (unknown extra fields included); a writer (the exporter, ``build-engine``) builds a
plain dict and stores ``parse(d).to_json()``. The service's ``hello`` reply carries
``m.public_dict()`` (without the private ``normalizer``); a controller parses it with
``parse(obj, public=True)``.

Schema, format version 1 (``parse`` enforces it and names the bad field):

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
                         (private: not in the service's public metadata)
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
                          "versions": {pkg: version}, "created_utc": str, "checkpoints": {...},
                          "recovered_from": {"engine", "engine_sha256", "graph_sha256"} (optional:
                          networks exported again from an engine file, export/from_engine.py)}
    checksums            {"graph_sha256": str}  sha256 over the graph without its metadata
                         (ONNX: ``onnx_graph_sha256``); a ``.plan`` adds "plan_sha256"
    tensorrt             (``.plan`` only) {"version", "fp16", "device", "onnx_graph_sha256"}

A robot profile (what ``check_profile`` / ``profile_problems`` compare against: the one rule
for "does this engine fit this robot", used by the engine loader, ``info``, the service and
the Go2 controller) is a plain dict written by the robot side, e.g. ``robot.controller.go2_profile``:

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
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from planner_runtime.engine import FUSED_OUTPUTS, STEP_OUTPUTS, graph_inputs

FORMAT = "planner-runtime-engine"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ONNX_METADATA_KEY = "planner_runtime.manifest"
GRAPH_KINDS = ("fused", "step")
# Fields a service keeps to itself: its public metadata (``Manifest.public_dict``) omits them.
PRIVATE_KEYS = ("normalizer",)


class ManifestError(ValueError):
    """A manifest is missing, malformed, of an unknown version, or mismatched."""


def _frozen(v: Any) -> Any:
    """A read-only copy of plain JSON: objects become mappingproxies, lists tuples."""
    if isinstance(v, Mapping):
        return MappingProxyType({k: _frozen(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    return v


def plain(v: Any) -> Any:
    """The plain JSON form (dicts and lists) of a value read from a ``Manifest``."""
    if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


@dataclass(frozen=True)
class MethodSpec:
    name: str
    knobs: Mapping[str, Any]


@dataclass(frozen=True)
class GraphSpec:
    kind: str  # "fused" | "step"
    n_steps: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Dims:
    S: int
    A: int
    C: int
    H: int
    B: int


@dataclass(frozen=True)
class DiffusionSpec:
    K: int
    schedule: str
    warm_level: int
    cold_levels: tuple[int, ...]
    warm_levels: tuple[int, ...]
    cfg_w: float
    temperature: float
    clip: tuple[float, float] | None

    def levels(self, warm: bool) -> tuple[int, ...]:
        return self.warm_levels if warm else self.cold_levels


@dataclass(frozen=True)
class ObservationSpec:
    state_names: tuple[str, ...]
    condition_names: tuple[str, ...]
    action_names: tuple[str, ...]
    other: Mapping[str, Any]  # the rest of the spec (version, robot, joint_order, units, ...)


@dataclass(frozen=True)
class ActionSpec:
    joint_names: tuple[str, ...]
    default_joint_pos: tuple[float, ...]
    scale: float | tuple[float, ...]  # one for all joints, or one per joint
    kp: float | None  # None: the engine records no PD gains
    kd: float | None
    name: str | None
    source: str | None
    block: Mapping[str, Any] = field(repr=False)  # the manifest's "action" object, read-only

    def scales(self) -> tuple[float, ...]:
        """The action scale per joint."""
        return self.scale if isinstance(self.scale, tuple) else (self.scale,) * len(self.joint_names)

    def to_dict(self) -> dict[str, Any]:
        """The plain ``action`` object (what ``robot.actions.ActionSemantics.from_dict`` reads)."""
        out: dict[str, Any] = plain(self.block)
        return out


@dataclass(frozen=True)
class ControlSpec:
    dt: float
    chunk_size: int
    dt_source: str | None


@dataclass(frozen=True)
class RobotSpec:
    name: str
    profile: Mapping[str, Any] | None


@dataclass(frozen=True)
class Checksums:
    graph_sha256: str
    plan_sha256: str | None  # a .plan container's engine bytes


@dataclass(frozen=True)
class Manifest:
    """A parsed, checked manifest (see the module docstring); build it with ``parse``."""

    format_version: int
    method: MethodSpec
    graph: GraphSpec
    dims: Dims
    diffusion: DiffusionSpec
    normalizer: Mapping[str, Any] | None  # None only in a public (service metadata) manifest
    observation: ObservationSpec
    action: ActionSpec
    control: ControlSpec
    overrides: Mapping[str, Any]
    robot: RobotSpec
    provenance: Mapping[str, Any]
    checksums: Checksums
    tensorrt: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)  # the parsed object, read-only (to_dict's source)

    @staticmethod
    def parse(obj: Any, public: bool = False) -> Manifest:
        return parse(obj, public)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this manifest was parsed from (a fresh, mutable copy)."""
        out: dict[str, Any] = plain(self.raw)
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): byte-stable for the same manifest."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def public_dict(self) -> dict[str, Any]:
        """``to_dict`` without the private fields: what the service sends in its metadata."""
        return {k: v for k, v in self.to_dict().items() if k not in PRIVATE_KEYS}


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
    """A finite number, returned as stored (an int stays an int: ``to_dict`` is exact)."""
    v = _get(d, key, path)
    name = f"{path}.{key}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ManifestError(f"manifest field {name!r} must be a finite number, got {v!r}")
    return v  # type: ignore[no-any-return]


def _list(d: Mapping[str, Any], key: str, path: str, n: int | None = None,
          item: type | tuple[type, ...] | None = None) -> tuple:
    v = _get(d, key, path)
    name = f"{path}.{key}"
    if not isinstance(v, (list, tuple)):
        raise ManifestError(f"manifest field {name!r} must be a list, got {type(v).__name__}")
    if n is not None and len(v) != n:
        raise ManifestError(f"manifest field {name!r} must have {n} entries, got {len(v)}")
    if item is not None:
        for i, e in enumerate(v):
            if isinstance(e, bool) or not isinstance(e, item):
                raise ManifestError(f"manifest field {name}[{i}] has the wrong type: {e!r}")
    return tuple(v)


def _levels(d: Mapping[str, Any], key: str, K: int, n: int | None) -> tuple[int, ...]:
    lv = _list(d, key, "diffusion", n=None if n is None else n + 1, item=int)
    if len(lv) < 2 or lv[-1] != 0 or lv[0] > K or any(b >= a for a, b in zip(lv, lv[1:], strict=False)):
        raise ManifestError(
            f"manifest field 'diffusion.{key}' must decrease strictly from <= K={K} to 0, got {list(lv)}"
        )
    return lv


def _opt_str(d: Mapping[str, Any], key: str, path: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise ManifestError(f"manifest field '{path}.{key}' must be a string, got {v!r}")
    return v


def parse(obj: Any, public: bool = False) -> Manifest:
    """Check a manifest's structure and internal consistency; return it as a ``Manifest``.

    Raises ``ManifestError`` naming the first bad field. Unknown extra fields are kept
    (forward compatible within a version; ``to_dict`` returns them); an unknown
    ``format_version`` is refused. ``public``: the private fields (``PRIVATE_KEYS``) may be
    absent, as in the metadata a service sends. A ``Manifest`` is returned as it is.
    """
    if isinstance(obj, Manifest):
        return obj
    if not isinstance(obj, Mapping):
        raise ManifestError(f"manifest must be a JSON object, got {type(obj).__name__}")
    m = _frozen(obj)
    fmt = _get(m, "format", "")
    if fmt != FORMAT:
        raise ManifestError(f"manifest field 'format' must be {FORMAT!r}, got {fmt!r}")
    ver = _get(m, "format_version", "")
    if ver not in SUPPORTED_VERSIONS:
        raise ManifestError(
            f"unknown engine format_version {ver!r}; this planner-runtime reads {SUPPORTED_VERSIONS}"
            " (re-export the engine with a matching planner-runtime)"
        )
    method = _get(m, "method", "")
    if not isinstance(_get(method, "name", "method"), str) or not method["name"]:
        raise ManifestError("manifest field 'method.name' must be a non-empty string")
    if not isinstance(_get(method, "knobs", "method"), Mapping):
        raise ManifestError("manifest field 'method.knobs' must be an object")

    d = _get(m, "dims", "")
    dims = Dims(S=_int(d, "S", "dims", 1), A=_int(d, "A", "dims", 1), C=_int(d, "C", "dims", 0),
                H=_int(d, "H", "dims", 1), B=_int(d, "B", "dims", 1))

    g = _get(m, "graph", "")
    kind = _get(g, "kind", "graph")
    if kind not in GRAPH_KINDS:
        raise ManifestError(f"manifest field 'graph.kind' must be one of {GRAPH_KINDS}, got {kind!r}")
    n = _int(g, "n_steps", "graph", 1)
    want_out = FUSED_OUTPUTS if kind == "fused" else STEP_OUTPUTS
    allowed_in = graph_inputs(kind)
    inputs = _list(g, "inputs", "graph", item=str)
    if inputs not in allowed_in:
        raise ManifestError(f"manifest field 'graph.inputs' must be {list(allowed_in[0])} for a {kind} "
                            f"graph (or {list(allowed_in[1])}, exported before committed-prefix inputs)")
    outputs = _list(g, "outputs", "graph", item=str)
    if outputs != want_out:
        raise ManifestError(f"manifest field 'graph.outputs' must be {list(want_out)} for a {kind} graph")

    f = _get(m, "diffusion", "")
    K = _int(f, "K", "diffusion", 1)
    sched = _get(f, "schedule", "diffusion")
    if sched not in ("cosine", "linear"):
        raise ManifestError(f"manifest field 'diffusion.schedule' is unknown: {sched!r}")
    kw = _int(f, "warm_level", "diffusion", 1)
    if kw > K:
        raise ManifestError(f"manifest field 'diffusion.warm_level' ({kw}) exceeds K ({K})")
    fixed = n if kind == "fused" else None  # a fused graph runs exactly n steps
    cold = _levels(f, "cold_levels", K, fixed)
    wl = _levels(f, "warm_levels", K, fixed)
    if wl[0] != kw:
        raise ManifestError(f"manifest field 'diffusion.warm_levels' must start at warm_level {kw}, got {list(wl)}")
    cfg_w = _num(f, "cfg_w", "diffusion")
    temperature = _num(f, "temperature", "diffusion")
    if temperature < 0:
        raise ManifestError("manifest field 'diffusion.temperature' must be >= 0")
    clip = None
    if _get(f, "clip", "diffusion") is not None:
        c = _list(f, "clip", "diffusion", n=2, item=(int, float))
        if not c[0] < c[1]:
            raise ManifestError(f"manifest field 'diffusion.clip' must be [lo, hi] with lo < hi, got {list(c)}")
        clip = (c[0], c[1])

    norm = m.get("normalizer") if public else _get(m, "normalizer", "")
    if (norm is not None or not public) and not (isinstance(norm, Mapping) and isinstance(norm.get("kind"), str)):
        raise ManifestError("manifest field 'normalizer' must be an object with a string 'kind'")

    o = _get(m, "observation", "")
    names = {}
    for key, dim in (("state_names", "S"), ("condition_names", "C"), ("action_names", "A")):
        names[key] = _list(o, key, "observation", item=str)
        if len(names[key]) != getattr(dims, dim):
            raise ManifestError(f"manifest field 'observation.{key}' must have {dim}={getattr(dims, dim)} names")

    action = parse_action(_get(m, "action", ""))

    ctl = _get(m, "control", "")
    dt = _num(ctl, "dt", "control")
    if dt <= 0:
        raise ManifestError("manifest field 'control.dt' must be > 0")
    chunk = _int(ctl, "chunk_size", "control", 1)
    if chunk > dims.H:
        raise ManifestError(f"manifest field 'control.chunk_size' ({chunk}) exceeds H ({dims.H})")

    over = m.get("overrides", MappingProxyType({}))
    if not isinstance(over, Mapping) or not all(isinstance(v, Mapping) and "value" in v for v in over.values()):
        raise ManifestError("manifest field 'overrides' must map field names to {'value': ..., 'data': ...}")

    robot = _get(m, "robot", "")
    if not isinstance(_get(robot, "name", "robot"), str):
        raise ManifestError("manifest field 'robot.name' must be a string")
    profile = robot.get("profile")
    if profile is not None and not isinstance(profile, Mapping):
        raise ManifestError("manifest field 'robot.profile' must be an object or null")
    prov = _get(m, "provenance", "")
    if not isinstance(prov, Mapping):
        raise ManifestError("manifest field 'provenance' must be an object")
    sums = _get(m, "checksums", "")
    gs = _get(sums, "graph_sha256", "checksums")
    if not (isinstance(gs, str) and len(gs) == 64):
        raise ManifestError("manifest field 'checksums.graph_sha256' must be a 64-hex sha256")
    trt = m.get("tensorrt")
    if trt is not None and not isinstance(trt, Mapping):
        raise ManifestError("manifest field 'tensorrt' must be an object")

    return Manifest(
        format_version=ver,
        method=MethodSpec(method["name"], method["knobs"]),
        graph=GraphSpec(kind, n, inputs, outputs),
        dims=dims,
        diffusion=DiffusionSpec(K, sched, kw, cold, wl, cfg_w, temperature, clip),
        normalizer=norm,
        observation=ObservationSpec(names["state_names"], names["condition_names"], names["action_names"],
                                    MappingProxyType({k: v for k, v in o.items() if k not in names})),
        action=action,
        control=ControlSpec(dt, chunk, _opt_str(ctl, "dt_source", "control")),
        overrides=over,
        robot=RobotSpec(robot["name"], profile),
        provenance=prov,
        checksums=Checksums(gs, _opt_str(sums, "plan_sha256", "checksums")),
        tensorrt=trt,
        raw=m,
    )


def parse_action(block: Any) -> ActionSpec:
    """The manifest's ``action`` object (also a recorded ``ActionSemantics.as_dict()``) as an
    ``ActionSpec``; ``ManifestError`` names the bad field (``action.<key>``)."""
    a = _frozen(block)
    if not isinstance(a, Mapping):
        raise ManifestError(f"manifest field 'action' must be an object, got {type(a).__name__}")
    joints = _list(a, "joint_names", "action", item=str)
    pose = _list(a, "default_joint_pos", "action", n=len(joints), item=(int, float))
    scale: float | tuple[float, ...]
    if isinstance(a.get("scale"), tuple):
        scale = _list(a, "scale", "action", n=len(joints), item=(int, float))
    else:
        scale = _num(a, "scale", "action")
    gains: dict[str, float | None] = {}
    for gain in ("kp", "kd"):
        v = _num(a, gain, "action") if gain in a else None
        if v is not None and v < 0:
            raise ManifestError(f"manifest field 'action.{gain}' must be >= 0")
        gains[gain] = v
    return ActionSpec(joints, pose, scale, gains["kp"], gains["kd"], _opt_str(a, "name", "action"),
                      _opt_str(a, "source", "action"), a)


def from_json(text: str | bytes, public: bool = False) -> Manifest:
    """Parse a stored manifest; a broken JSON string is a ManifestError too."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"engine manifest is not valid JSON: {exc}") from exc
    return parse(obj, public)


def _close(a: Sequence[float], b: Sequence[float], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b, strict=False))


def check_profile(manifest: Manifest, profile: Mapping[str, Any]) -> None:
    """Refuse an engine that does not fit a robot profile (schema in the module docstring).

    Compares dimensions, joint order, default pose, action scale, control dt and, when the
    profile lists them, state and condition names. Raises ``ManifestError`` listing every
    mismatch, so one run tells the user all that is wrong.
    """
    problems = profile_problems(manifest, profile)
    if problems:
        raise ManifestError("engine does not match the robot profile: " + "; ".join(problems))


def profile_problems(manifest: Manifest, profile: Any) -> list[str]:
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


def _profile_problems(manifest: Manifest, profile: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    dims = manifest.dims
    for key, dim in (("state_dim", "S"), ("action_dim", "A"), ("condition_dim", "C")):
        if key in profile and int(profile[key]) != getattr(dims, dim):
            problems.append(f"{dim} ({key}): engine has {getattr(dims, dim)}, profile {profile.get('name')!r} "
                            f"has {profile[key]}")
    problems += action_problems(manifest.action, profile)
    dt = float(manifest.control.dt)
    if "policy_dt" in profile and not _close([profile["policy_dt"]], [dt], 1e-9):
        problems.append(f"control dt: engine {dt} s != profile {profile['policy_dt']} s")
    if "control_dt" in profile:
        cdt = float(profile["control_dt"])
        ratio = dt / cdt if cdt > 0 and math.isfinite(cdt) else float("nan")
        if not (math.isfinite(ratio) and ratio >= 1 and abs(ratio - round(ratio)) < 1e-6):
            problems.append(f"engine dt {dt} s is not a whole number of the robot's control periods ({cdt} s)")
    obs = manifest.observation
    for key, names in (("state_names", obs.state_names), ("condition_names", obs.condition_names)):
        if key in profile and list(profile[key]) != list(names):
            problems.append(f"observation {key} differ from the profile's (order or content)")
    if "name" in profile and manifest.robot.name != profile["name"]:
        problems.append(f"robot: engine was made for {manifest.robot.name!r}, profile is {profile['name']!r}")
    return problems


def action_problems(act: ActionSpec, profile: Mapping[str, Any]) -> list[str]:
    """Every way action semantics do not fit what a robot executes (part of
    ``profile_problems``; ``robot.actions.ActionSemantics.check`` runs it alone): the joint
    order (``profile["joint_names"]``) and ``profile["action"]`` (see ``profile_problems``)."""
    out: list[str] = []
    if "joint_names" in profile and list(profile["joint_names"]) != list(act.joint_names):
        out.append(f"joint order: engine {list(act.joint_names)} != profile {list(profile['joint_names'])}")
    pa = profile.get("action")
    if pa is None:
        return out
    if not isinstance(pa, Mapping):
        return [*out, f"profile 'action' must be a map, got {type(pa).__name__}"]
    kind = pa.get("type", "joint_position")
    if kind != "joint_position":
        out.append(f"the robot executes {kind!r} actions; engines here are joint-position targets")
    n = len(act.joint_names)
    pose = [float(v) for v in act.default_joint_pos]
    lo, hi = pa.get("joint_pos_lower"), pa.get("joint_pos_upper")
    if lo is not None and hi is not None:
        lo, hi = [float(v) for v in lo], [float(v) for v in hi]
        if len(lo) != n or len(hi) != n:
            out.append(f"profile joint limits have {len(lo)}/{len(hi)} entries, the engine {n} joints")
        elif any(not a <= p <= b for p, a, b in zip(pose, lo, hi, strict=True)):
            out.append("the engine's default_joint_pos lies outside the robot's joint limits")
    for key, vals, what in (("scale_range", [float(v) for v in act.scales()], "action scale"),
                            ("kp_range", None if act.kp is None else [float(act.kp)], "kp"),
                            ("kd_range", None if act.kd is None else [float(act.kd)], "kd")):
        rng = pa.get(key)
        if rng is None:
            continue
        a, b = (float(v) for v in rng)
        if vals is None:
            out.append(f"the engine records no {what} (exported before PD gains were recorded: re-export it)")
        elif any(not a <= v <= b for v in vals):
            out.append(f"engine {what} {vals if len(vals) > 1 else vals[0]} outside the robot's range [{a}, {b}]")
    return out


def condition_range(manifest: Manifest) -> dict[str, list[float]] | None:
    """The range each of the networks' condition columns had in the training data, in their
    training order (a Go2 engine's starts with the command; fixed targets such as
    ``cost_to_go`` are among them), from a min-max normalizer: ``shift -/+ scale``. None for
    any other normalizer (it records no range) or none. A column that was constant in the
    data (the normalizer's ``constant``) has its value as both ends; in an engine exported
    before the normalizer recorded them, such a column reads as its value +/- 1 (the
    placeholder scale), an upper bound. What the controller clamps live velocity commands to
    (robot/live_command.py)."""
    norm = manifest.normalizer
    if not isinstance(norm, Mapping) or norm.get("kind") != "minmax":
        return None
    cond = norm.get("cond")
    if not isinstance(cond, Mapping):
        return None
    try:
        shift = [float(v) for v in cond["shift"]]
        scale = [float(v) for v in cond["scale"]]
    except (KeyError, TypeError, ValueError):
        return None
    if len(shift) != len(scale) or not all(math.isfinite(v) for v in shift + scale):
        return None
    try:
        constant = {int(i) for i in cond.get("constant", ())}
    except (TypeError, ValueError):
        return None
    half = [0.0 if i in constant else b for i, b in enumerate(scale)]
    return {"lo": [a - b for a, b in zip(shift, half, strict=True)],
            "hi": [a + b for a, b in zip(shift, half, strict=True)]}


def engine_identity(manifest: Manifest) -> dict[str, Any]:
    """Who an engine is, in a few stable fields a controller can log, compare and pin: the
    graph checksum (and the TensorRT plan's), method, format version, robot, and the
    provenance id (the sha256 of the dataset it was trained on, and when it was made)."""
    prov = manifest.provenance
    return {
        "graph_sha256": manifest.checksums.graph_sha256,
        "plan_sha256": manifest.checksums.plan_sha256,
        "method": manifest.method.name,
        "format_version": manifest.format_version,
        "robot": manifest.robot.name,
        "dataset_sha256": prov.get("dataset_sha256"),
        "created_utc": prov.get("created_utc"),
    }


def summary(manifest: Manifest) -> str:
    """A few human-readable lines for logs and ``planner-runtime info``."""
    d, g, f, c = manifest.dims, manifest.graph, manifest.diffusion, manifest.control
    return "\n".join([
        f"method      {manifest.method.name}  knobs {json.dumps(plain(manifest.method.knobs), sort_keys=True)}",
        f"graph       {g.kind} (n_steps {g.n_steps})",
        f"dims        S={d.S} A={d.A} C={d.C} H={d.H} B={d.B}",
        f"diffusion   K={f.K} {f.schedule} warm_level={f.warm_level} cfg_w={f.cfg_w} "
        f"temperature={f.temperature} clip={plain(f.clip)}",
        f"levels      cold {list(f.cold_levels)}  warm {list(f.warm_levels)}",
        f"robot       {manifest.robot.name}  dt={c.dt} s  "
        f"chunk={c.chunk_size}  action scale={plain(manifest.action.scale)}",
        f"checksum    graph sha256 {manifest.checksums.graph_sha256}",
    ])

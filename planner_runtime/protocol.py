"""The wire protocol between the planner service and its clients (ZeroMQ frames, msgpack).

Every message is one msgpack map with a protocol version ``v`` and a ``type``. Numeric
arrays travel as ``{"dtype": "<f4", "shape": [H, A], "bytes": b"..."}`` maps and are
validated on receipt: the dtype must be on a small allow-list of plain little-endian
numbers, the byte count must match the shape, the shape must match what the field expects,
and floats must be finite. The decoder never builds Python objects from the wire beyond
msgpack's own plain types.

Why not pickle (or numpy's ``allow_pickle``): unpickling runs code chosen by the sender, so
any peer that can reach the socket could run code on the robot's computer. For the same
reason object, void (structured) and complex dtypes are refused: object arrays need
pickle, void arrays carry arbitrary records whose layout the receiver cannot check, and
complex numbers have no meaning for states or joint targets. msgpack extension types are
refused too.

Message types (``type`` field) and their fields (besides ``v`` and ``type``; requests may
carry an int ``req`` that the reply echoes):
    hello        client -> server: ask for the engine's public metadata; may carry
                 ``profile`` (the robot profile, see below) to have it checked
    metadata     server -> client: the manifest's public part (``manifest``, without the
                 normalizer), state_dim, action_dim, cond_dim, horizon, dt, chunk, send_steps,
                 K, cold_levels, warm_levels, cfg_w, temperature, backend, graph, protocol,
                 inpaints (whether the engine holds committed actions),
                 ``identity`` (the engine's identity: graph_sha256, plan_sha256, method,
                 format_version, robot, dataset_sha256, created_utc), ``condition_range``
                 ({"lo", "hi"} per condition column of the networks, from a min-max
                 normalizer; null otherwise), owner_timeout_s, and
                 ``profile_check`` (list of mismatches, empty when it fits) when a profile
                 was sent
    claim        client -> server: take ownership of the planner (see Ownership); optional
                 ``profile`` (checked first: a mismatch is refused with ``profile_mismatch``
                 and takes nothing) and ``session`` (renew a session this client holds)
    claimed      server -> client: session (int token the owner puts in its observations),
                 owner_timeout_s, identity, renewed (bool), profile_check (list)
    release      client -> server: give ownership up (optional ``session``)
    observation  client -> server: seq (int >= 0), stamp (client monotonic seconds, when the
                 state was measured), state [S] and cond [C] (float32/float64 arrays),
                 optional ``session`` (the token from ``claimed``), optional ``committed``
                 [n <= horizon, A] (the actions the robot runs at stamp, stamp + dt, ...
                 while this plan is computed: held as the plan's first n rows)
    chunk        server -> client: plan_id, seq (the observation it answers), t0 (= that
                 observation's stamp), dt, actions [n, A] (row i applies at t0 + i*dt),
                 states [n, S] (row i is the state predicted for t0 + (i + 1)*dt), chunk
                 (how many actions to execute before the next plan replaces them),
                 valid_until (= t0 + n*dt), cold (bool), prefix (rows that are the
                 observation's committed actions), timings (ms: infer_ms, prep_ms,
                 plan_ms, queue_ms and the engine's own)
    ping         client -> server: liveness / health query
    health       server -> client: status ("ok", "engine_failing", "planner_stopped"),
                 counters and ``ownership`` (owner or null, owner_timeout_s, counts)
    reset        client -> server: drop the warm-start plan; the next plan starts cold
                 (owner only, like an observation)
    ack          server -> client: ``for`` names the request done (reset, release;
                 release adds ``released``: whether this client held the planner)
    error        server -> client: code (``E_*`` below), message; ``req``/``seq`` name what
                 it answers when that could be read; ``busy`` adds ``retry_after_s``

Ownership (one planner, one robot): the service plans for one client at a time.
  - A client owns the planner after an explicit ``claim`` (the controller's way: it sends its
    robot profile and gets the engine identity and a session token back) or, when nobody
    owns it, by its first observation (an implicit claim, for simple clients and benches).
  - Everyone may ``hello`` and ``ping``. An ``observation`` or ``reset`` from anyone else
    gets an ``error`` with code ``busy`` (never silence): the message names how long the
    owner has been idle and ``retry_after_s`` says when its ownership lapses at the earliest.
    A ``claim`` from anyone else is refused with ``busy`` too.
  - An observation that carries a ``session`` the service does not hold (it restarted, or
    the session lapsed or was released) gets ``session_lost`` (or ``busy`` if another client
    owns the planner now): the client must claim again, and a controller checks the engine
    identity again before it plans. A session owner whose connection changed (ZeroMQ
    reconnect) is recognised by its token.
  - Ownership lapses when the owner sent no observation (or claim) for ``owner_timeout_s``
    (``serve --owner-timeout``, default 1 s), when the owner sends ``release``, or when a
    reply to the owner cannot be delivered because its connection is gone. A new owner's
    first plan starts cold.

A robot profile is a map: name, state_dim, action_dim, condition_dim, joint_names (in the
robot's order), policy_dt, control_dt, state_names, action {type, joint_pos_lower,
joint_pos_upper, kp_range, kd_range, scale_range}; every key optional
(``planner_runtime.manifest.profile_problems`` is the check).

All times are seconds on the client's monotonic clock: the server only echoes the stamp it
was given plus durations, so no clock synchronization is needed.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
# A Go2 observation is ~200 bytes and a chunk ~2 kB; 1 MiB leaves room for large robots
# while bounding what one peer can make the service allocate.
MAX_MESSAGE_BYTES = 1 << 20
MAX_NDIM = 4

# Plain little-endian numbers only (see the module docstring for what is refused and why).
ALLOWED_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "|u1", "|b1"})
FLOAT_DTYPES = ("<f4", "<f8")

TYPES = ("hello", "metadata", "observation", "chunk", "ping", "health", "reset", "ack", "error",
         "claim", "claimed", "release")

# Error codes (stable strings: clients switch on them).
E_BAD_FRAME = "bad_frame"          # not a msgpack map (garbage bytes, extension types)
E_TOO_LARGE = "too_large"          # message larger than the bound
E_BAD_VERSION = "bad_version"      # missing or different protocol version
E_UNKNOWN_TYPE = "unknown_type"    # no such message type (or not one a server accepts)
E_MISSING_FIELD = "missing_field"  # a required field is absent
E_BAD_FIELD = "bad_field"          # wrong Python type or value range
E_BAD_DTYPE = "bad_dtype"          # array dtype not allowed / not what the field needs
E_BAD_SHAPE = "bad_shape"          # array shape wrong or inconsistent with its bytes
E_NOT_FINITE = "not_finite"        # NaN or inf in a float array or scalar
E_ENGINE = "engine_error"          # the sampler failed on a valid observation
E_BUSY = "busy"                    # another client owns the planner (see Ownership)
E_SESSION_LOST = "session_lost"    # the session named in the message is not held here (any more)
E_PROFILE_MISMATCH = "profile_mismatch"  # the claimed robot profile does not fit the engine
E_INTERNAL = "internal_error"


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``code`` is one of the ``E_*`` strings."""

    def __init__(self, code: str, message: str, req: int | None = None, seq: int | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.req = req
        self.seq = seq
        self.extra = extra or {}  # further plain fields for the error reply (retry_after_s)


# ---------------------------------------------------------------------------- arrays

def pack_array(a: np.ndarray) -> dict[str, Any]:
    """Encode an array as a plain map (C order, little-endian).

    On the latency path (every observation and chunk): an ndarray is not re-wrapped, and
    ``tobytes`` already writes C order for any layout, so views need no contiguous copy."""
    if type(a) is not np.ndarray:
        a = np.asarray(a)
    dt = a.dtype.str
    if dt[0] == ">":  # big-endian data (or host): the wire is little-endian
        a = a.astype(a.dtype.newbyteorder("<"))
        dt = a.dtype.str
    if dt not in ALLOWED_DTYPES:
        raise ProtocolError(E_BAD_DTYPE, f"cannot send dtype {a.dtype} (allowed: {sorted(ALLOWED_DTYPES)})")
    return {"dtype": dt, "shape": list(a.shape), "bytes": a.tobytes()}


def as_f32(a: Any) -> np.ndarray:
    """``a`` as a float32 ndarray, without a call when it already is one."""
    if type(a) is np.ndarray and a.dtype is _F32:
        return a
    return np.asarray(a, np.float32)


_ZEROS: dict[tuple[int, str], np.ndarray] = {}
# inf * 0 sets the floating-point "invalid" flag, so numpy would warn from all_finite's dot
# product whenever a peer sends an inf (and from a float64 -> float32 cast that overflows);
# both become error replies anyway.
warnings.filterwarnings("ignore", "invalid value encountered in dot|overflow encountered in cast",
                        RuntimeWarning, __name__)


def all_finite(a: np.ndarray) -> bool:
    """True when a float array holds no NaN or inf.

    One numpy call instead of ``np.isfinite(a).all()``'s two: ``x * 0`` is 0 for every
    finite x and NaN for NaN or +-inf, so the dot product of the flattened array with
    zeros is NaN exactly when some entry is not finite (and it cannot overflow). This runs
    on every observation and plan, and after the idle time between plans each distinct
    numpy call costs tens of microseconds with cold caches (measured on the 2-vCPU VM:
    ``np.isfinite(a).all()`` on 30 floats took 14 us right after other work, 74 us after an
    80 ms sleep)."""
    if a.ndim != 1:
        a = a.reshape(-1)
    key = (a.size, a.dtype.char)
    z = _ZEROS.get(key)
    if z is None:
        if len(_ZEROS) > 64:  # shapes come from peers: keep the cache bounded
            _ZEROS.clear()
        z = _ZEROS[key] = np.zeros(a.size, a.dtype)
    return math.isfinite(a.dot(z))


_NP_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_F32 = np.dtype(np.float32)


def unpack_array(obj: Any, name: str, *, shape: tuple[int | None, ...] | None = None,
                 dtypes: tuple[str, ...] = FLOAT_DTYPES, finite: bool = True) -> np.ndarray:
    """Decode and validate an array field. ``None`` in ``shape`` means any size there.

    Every observation and chunk goes through this on the latency path, so the checks are
    written as plain loops and dict lookups (no generators, no dtype parsing per call)."""
    if not isinstance(obj, dict):
        raise ProtocolError(E_BAD_FIELD, f"{name}: expected an array map {{dtype, shape, bytes}}, got {type(obj).__name__}")
    try:
        dt, shp, buf = obj["dtype"], obj["shape"], obj["bytes"]
    except KeyError:
        missing = next(k for k in ("dtype", "shape", "bytes") if k not in obj)
        raise ProtocolError(E_MISSING_FIELD, f"{name}: array map lacks {missing!r}") from None
    dtype = _NP_DTYPES.get(dt) if type(dt) is str else None
    if dtype is None:
        raise ProtocolError(E_BAD_DTYPE, f"{name}: dtype {dt!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)}; object, void and complex arrays are always refused)")
    if dt not in dtypes:
        raise ProtocolError(E_BAD_DTYPE, f"{name}: dtype {dt} not accepted here (expected one of {list(dtypes)})")
    ok = isinstance(shp, list) and len(shp) <= MAX_NDIM
    n = 1
    if ok:
        for d in shp:
            if type(d) is not int or d < 0:  # type() is int also refuses bool
                ok = False
                break
            n *= d
    if not ok:
        raise ProtocolError(E_BAD_SHAPE, f"{name}: shape must be a list of <= {MAX_NDIM} non-negative ints, got {shp!r}")
    if not isinstance(buf, bytes):
        raise ProtocolError(E_BAD_FIELD, f"{name}: 'bytes' must be binary, got {type(buf).__name__}")
    if n * dtype.itemsize != len(buf):
        raise ProtocolError(E_BAD_SHAPE, f"{name}: shape {shp} of {dt} needs {n * dtype.itemsize} bytes, got {len(buf)}")
    if shape is not None:
        bad = len(shp) != len(shape)
        if not bad:
            for e, d in zip(shape, shp):  # noqa: B905 (lengths checked just above)
                if e is not None and e != d:
                    bad = True
                    break
        if bad:
            want = ["*" if e is None else e for e in shape]
            raise ProtocolError(E_BAD_SHAPE, f"{name}: expected shape {want}, got {shp}")
    a = np.frombuffer(buf, dtype=dtype)  # 1-D, read-only view of the message bytes
    if finite and dtype.kind == "f" and not all_finite(a):
        bad_n = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise ProtocolError(E_NOT_FINITE, f"{name}: {bad_n} non-finite value(s) (NaN or inf)")
    return a if len(shp) == 1 else a.reshape(shp)


# ---------------------------------------------------------------------------- framing

def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(E_BAD_FRAME, f"msgpack extension type {code} is not accepted")


_tls = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer. ``msgpack.packb`` builds a packer with a fresh 256 KiB buffer
    per call; after an engine run that allocation alone cost ~60 us here (glibc merges its
    freed small blocks on the first large request). Kept per thread:
    the socket and planner threads encode concurrently."""
    p = getattr(_tls, "packer", None)
    if p is None:
        p = _tls.packer = msgpack.Packer(use_bin_type=True, buf_size=64 * 1024)
    return p


def encode(msg: dict[str, Any]) -> bytes:
    """Pack a message map (adds ``v``). Raises ProtocolError if it would exceed the bound."""
    if "type" not in msg:
        raise ValueError("a message needs a 'type'")
    out = _packer().pack({"v": PROTOCOL_VERSION, **msg})
    if len(out) > MAX_MESSAGE_BYTES:
        raise ProtocolError(E_TOO_LARGE, f"message of {len(out)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return out


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Unpack and check the envelope (size, map, version, known type)."""
    if len(data) > max_bytes:
        raise ProtocolError(E_TOO_LARGE, f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(E_BAD_FRAME, f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(E_BAD_FRAME, f"a message must be a msgpack map, got {type(msg).__name__}")
    req = msg.get("req") if isinstance(msg.get("req"), int) else None
    seq = msg.get("seq") if isinstance(msg.get("seq"), int) else None
    if "v" not in msg:
        raise ProtocolError(E_BAD_VERSION, f"missing protocol version 'v' (this side speaks v{PROTOCOL_VERSION})", req, seq)
    if msg["v"] != PROTOCOL_VERSION:
        raise ProtocolError(E_BAD_VERSION, f"protocol version {msg['v']!r} not supported (this side speaks v{PROTOCOL_VERSION})", req, seq)
    t = msg.get("type")
    if t is None:
        raise ProtocolError(E_MISSING_FIELD, "missing 'type'", req, seq)
    if t not in TYPES:
        raise ProtocolError(E_UNKNOWN_TYPE, f"unknown message type {t!r} (known: {list(TYPES)})", req, seq)
    return msg


def _field(msg: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    if name not in msg:
        raise ProtocolError(E_MISSING_FIELD, f"{msg.get('type')}: missing field {name!r}",
                            _int_or_none(msg.get("req")), _int_or_none(msg.get("seq")))
    val = msg[name]
    if isinstance(val, bool) and bool not in kinds or not isinstance(val, kinds):
        raise ProtocolError(E_BAD_FIELD, f"{msg.get('type')}: field {name!r} must be {'/'.join(k.__name__ for k in kinds)}, got {type(val).__name__}",
                            _int_or_none(msg.get("req")), _int_or_none(msg.get("seq")))
    return val


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _finite(name: str, v: float, msg: dict[str, Any]) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ProtocolError(E_NOT_FINITE, f"{msg.get('type')}: {name} is not finite ({v})",
                            _int_or_none(msg.get("req")), _int_or_none(msg.get("seq")))
    return v


def _engine_f32(a: np.ndarray, name: str) -> np.ndarray:
    """A decoded float array as the engine takes it (float32). float64 values beyond
    float32's range become inf in the cast, so they are checked again and refused."""
    if a.dtype is _F32:
        return a
    a = a.astype(np.float32)
    if not all_finite(a):
        raise ProtocolError(E_NOT_FINITE, f"{name}: value(s) beyond float32 range")
    return a


# ---------------------------------------------------------------------------- messages

@dataclass
class Observation:
    seq: int
    stamp: float  # seconds, client's monotonic clock: the time the state was measured
    state: np.ndarray  # [S]
    cond: np.ndarray  # [C]
    # Real-time chunking (planner_runtime.chunking): the actions the robot executes at
    # stamp, stamp + dt, ... while this plan is computed ([n, A], raw). The engine holds
    # them fixed as the plan's first n rows. Absent (None) on the wire when there are none.
    committed: np.ndarray | None = None

    def to_msg(self) -> dict[str, Any]:
        msg = {"type": "observation", "seq": int(self.seq), "stamp": float(self.stamp),
               "state": pack_array(as_f32(self.state)), "cond": pack_array(as_f32(self.cond))}
        if self.committed is not None and len(self.committed):
            msg["committed"] = pack_array(as_f32(self.committed))
        return msg

    @classmethod
    def from_msg(cls, msg: dict[str, Any], state_dim: int | None = None,
                 cond_dim: int | None = None, action_dim: int | None = None,
                 max_committed: int | None = None) -> Observation:
        seq = _field(msg, "seq", (int,))
        if seq < 0:
            raise ProtocolError(E_BAD_FIELD, f"observation: seq must be >= 0, got {seq}")
        stamp = _finite("stamp", _field(msg, "stamp", (int, float)), msg)
        committed = None
        try:
            state = unpack_array(_field(msg, "state", (dict,)), "state", shape=(state_dim,))
            cond = unpack_array(_field(msg, "cond", (dict,)), "cond", shape=(cond_dim,))
            state, cond = _engine_f32(state, "state"), _engine_f32(cond, "cond")
            if msg.get("committed") is not None:
                committed = unpack_array(_field(msg, "committed", (dict,)), "committed",
                                         shape=(None, action_dim))
                committed = _engine_f32(committed, "committed")
                if max_committed is not None and len(committed) > max_committed:
                    raise ProtocolError(E_BAD_SHAPE, f"committed: {len(committed)} rows, the engine "
                                        f"plans {max_committed}")
        except ProtocolError as exc:
            exc.seq = seq
            raise
        return cls(seq, stamp, state, cond, committed)


@dataclass
class ActionChunk:
    """A plan as the controller uses it; the timing helpers take the client's clock."""

    plan_id: int
    obs_seq: int
    t0: float
    dt: float
    actions: np.ndarray  # [n, A]; row i applies at t0 + i*dt
    states: np.ndarray  # [n, S]; row i is predicted for t0 + (i + 1)*dt
    chunk: int  # how many leading actions are meant to run before the next plan
    valid_until: float
    cold: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    received_at: float | None = None  # set by the client on receipt
    prefix: int = 0  # leading rows that are the observation's committed actions, held fixed

    def to_msg(self) -> dict[str, Any]:
        return {"type": "chunk", "plan_id": self.plan_id, "seq": self.obs_seq, "t0": self.t0,
                "dt": self.dt, "actions": pack_array(as_f32(self.actions)),
                "states": pack_array(as_f32(self.states)), "chunk": self.chunk,
                "valid_until": self.valid_until, "cold": self.cold, "prefix": int(self.prefix),
                "timings": {k: float(v) for k, v in self.timings.items()}}

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> ActionChunk:
        actions = unpack_array(_field(msg, "actions", (dict,)), "actions", shape=(None, None))
        states = unpack_array(_field(msg, "states", (dict,)), "states", shape=(actions.shape[0], None))
        timings = _field(msg, "timings", (dict,))
        dt = _finite("dt", _field(msg, "dt", (int, float)), msg)
        if dt <= 0:
            raise ProtocolError(E_BAD_FIELD, f"chunk: dt must be > 0, got {dt}")
        return cls(plan_id=_field(msg, "plan_id", (int,)), obs_seq=_field(msg, "seq", (int,)),
                   t0=_finite("t0", _field(msg, "t0", (int, float)), msg), dt=dt,
                   actions=actions, states=states, chunk=_field(msg, "chunk", (int,)),
                   valid_until=_finite("valid_until", _field(msg, "valid_until", (int, float)), msg),
                   cold=bool(_field(msg, "cold", (bool,))),
                   prefix=int(msg["prefix"]) if isinstance(msg.get("prefix"), int) else 0,
                   timings={str(k): float(v) for k, v in timings.items()
                            if isinstance(v, (int, float))})

    # --- timing helpers (client clock) ---
    def index_at(self, t: float) -> int | None:
        """Index of the action that applies at time ``t``, or None outside the chunk."""
        if t < self.t0 - 1e-9 or self.expired(t):
            return None
        i = int((t - self.t0) / self.dt + 1e-9)
        return i if i < len(self.actions) else None

    def action_at(self, t: float) -> np.ndarray | None:
        """The action for time ``t``; actions whose time has passed are skipped."""
        i = self.index_at(t)
        return None if i is None else self.actions[i]

    def expired(self, t: float) -> bool:
        return t >= self.valid_until

    def age(self, t: float) -> float:
        """Seconds since the observation this plan answers was measured."""
        return t - self.t0


def error_msg(code: str, message: str, req: int | None = None, seq: int | None = None,
              **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message, **extra}
    if req is not None:
        out["req"] = req
    if seq is not None:
        out["seq"] = seq
    return out

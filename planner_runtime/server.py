"""The planner service's socket side: a ZeroMQ ROUTER that never waits for the sampler.

One thread (the caller of ``serve_forever``) reads the ROUTER socket: requests (hello,
ping, reset) are answered at once; an observation is validated and put into the planner's
size-1 slot (latest wins). The sampler thread sends each finished chunk to the client's
identity itself, so a chunk leaves without waking the socket thread first (one thread
wake-up less per plan; per message 0.86 -> 0.73 ms median when it came in, 6 alternating
rounds on the 2-vCPU CI-class VM; docs/service.md has the benchmark).

ZeroMQ sockets are not thread-safe, so every call on the ROUTER happens under one lock,
and no call blocks: the socket thread waits for traffic on the socket's file descriptor
(``zmq.FD``) and a self-pipe, outside the lock, and the sampler thread only holds the lock
for one non-blocking send. That descriptor is edge-triggered: any call on the socket may
consume the notice of a message that has arrived. So after its send the sampler thread
checks ``zmq.EVENTS``; if a message is waiting, it writes a byte to the pipe to wake the
socket thread. Every message that cannot be accepted gets an ``error`` reply with a code
and a message, and the loop goes on: a bad or vanished client never stops the service.

Ownership: the service plans for one client at a time (``planner_runtime.protocol`` has
the rules). The owner is the client that claimed the planner (``claim``) or, when nobody
owned it, sent the first observation; everyone else may ``hello`` and ``ping``, and their
observations, resets and claims are answered with a ``busy`` error. Ownership lapses after
``owner_timeout`` seconds without the owner's observations, on ``release``, or when a reply
to the owner finds its connection gone. All ownership state is read and changed under the
socket lock (the socket thread handles requests under it; the sampler thread sends under
it and may learn there that the owner has gone).

Security: the default bind is loopback. Binding anything else requires CurveZMQ: a server
certificate (``zmq.auth.create_certificates``) and, to authenticate clients, a directory
of allowed client public keys; without them the server refuses to start.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from planner_runtime import __version__
from planner_runtime import protocol as P
from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
from planner_runtime.engine import Engine
from planner_runtime.manifest import condition_range, engine_identity, profile_problems

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("planner_runtime.server")

# Hard cap enforced by libzmq itself (the peer is disconnected above it); messages between
# the protocol bound and this cap still get a "too_large" error reply.
ZMQ_MAXMSGSIZE = 4 * P.MAX_MESSAGE_BYTES
DEFAULT_BIND = "tcp://127.0.0.1:5555"
LOG_BAD_PER_S = 10
# Seconds without the owner's observations after which another client may take the planner
# (serve --owner-timeout). The controller sends one every 80 ms while it plans.
DEFAULT_OWNER_TIMEOUT = 1.0



def free_tcp_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that is free on ``host`` now (for tests, benches and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class ServerConfigError(ValueError):
    """The server cannot start with these settings (e.g. exposed bind without CurveZMQ)."""


@dataclass
class Owner:
    """The client the planner works for (see the module docstring)."""

    ident: bytes  # ZeroMQ routing id of its connection (changes when it reconnects)
    session: int  # token it names in its messages (explicit claims; implicit owners get one too)
    explicit: bool  # claimed with a ``claim`` message (else: by its first observation)
    since: float  # monotonic time it became the owner
    last_seen: float  # monotonic time of its last observation or claim
    profile_name: str | None = None


@dataclass
class CurveConfig:
    """CurveZMQ settings: the server's certificate and the allowed clients' public keys."""

    secret_key_file: str  # a zmq.auth secret certificate (``*.key_secret``)
    public_keys_dir: str | None = None  # directory of allowed client ``*.key`` files


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # "source;dest" form: judge the local (bound) side
        host = host.split(";")[-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: not provably loopback
        return False


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _SKIP = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"t": round(record.created, 6), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in self._SKIP:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Route ``planner_runtime.*`` logs to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("planner_runtime")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def public_metadata(engine: Engine, spec: PlannerSpec, planner: AsyncPlanner) -> dict[str, Any]:
    return {
        "type": "metadata", "server_version": __version__, "protocol": P.PROTOCOL_VERSION,
        "backend": engine.backend, "graph": spec.graph,
        "state_dim": spec.S, "action_dim": spec.A, "cond_dim": spec.C, "horizon": spec.H,
        "candidates": spec.B, "dt": spec.dt, "chunk": spec.chunk, "send_steps": planner.send_steps,
        "K": spec.K, "cold_levels": spec.cold_levels.tolist(), "warm_levels": spec.warm_levels.tolist(),
        "cfg_w": spec.cfg_w, "temperature": spec.temperature,
        "cold_threshold": planner.cold_threshold, "inpaints": bool(getattr(engine, "inpaints", False)),
        "manifest": engine.manifest.public_dict(),  # without the private fields (normalizer)
        "identity": engine_identity(engine.manifest),
        "condition_range": condition_range(engine.manifest),  # the data's, where the normalizer says
    }


class PlannerServer:
    """ROUTER socket + AsyncPlanner. ``serve_forever()`` runs until ``stop()``."""

    def __init__(self, engine: Engine, spec: PlannerSpec, *, bind: str = DEFAULT_BIND,
                 seed: int = 0, cold_threshold: float = 1.0, send_steps: int | None = None,
                 curve: CurveConfig | None = None, poll_ms: int = 100,
                 context: zmq.Context | None = None,
                 owner_timeout: float = DEFAULT_OWNER_TIMEOUT) -> None:
        if not is_loopback_endpoint(bind) and curve is None:
            raise ServerConfigError(
                f"refusing to bind {bind}: it is not a loopback address, and serving a robot's "
                "planner on a network without authentication lets anyone drive it. Pass CurveZMQ "
                "keys (--curve-secret-key SERVER.key_secret --curve-public-keys CLIENT_KEYS_DIR; "
                "create them with zmq.auth.create_certificates) or bind tcp://127.0.0.1:PORT.")
        if not (owner_timeout > 0):  # NaN fails too; inf: ownership never lapses by time
            raise ServerConfigError(f"owner timeout must be > 0 s, got {owner_timeout}")
        self.engine = engine
        self.spec = spec
        self.poll_ms = int(poll_ms)
        self.owner_timeout = float(owner_timeout)
        self.owner: Owner | None = None
        self.ownership: dict[str, int] = {"claims": 0, "implicit_claims": 0, "releases": 0,
                                          "lapses": 0, "disconnects": 0, "busy_replies": 0,
                                          "session_lost_replies": 0}
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._auth: ThreadAuthenticator | None = None
        self._t_start = time.monotonic()
        self.counters: dict[str, int] = {"rx": 0, "tx": 0, "errors_sent": 0, "send_dropped": 0}
        self.error_counts: dict[str, int] = {}
        self._log_window: list[float] = [0.0, 0]
        # Every call on the ROUTER socket happens under this lock (see the module docstring);
        # the pipe wakes the socket thread when the sampler's send consumed a message notice.
        self._sock_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        # Closed when the server object goes, not at stop: a late _wake() (a signal handler's
        # stop(), a result that raced the shutdown) must never write into a descriptor number
        # that the process has reused for something else.
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.planner = AsyncPlanner(engine, spec, self._on_result, seed=seed,
                                    cold_threshold=cold_threshold, send_steps=send_steps)
        self.metadata = public_metadata(engine, spec, self.planner)
        self.metadata["owner_timeout_s"] = self.owner_timeout if math.isfinite(self.owner_timeout) else None

        self._serving = False
        self._closed = False
        self.sock = self._ctx.socket(zmq.ROUTER)
        try:
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAXMSGSIZE)
            self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # know when a client has gone
            self.sock.setsockopt(zmq.SNDHWM, 100)
            self.sock.setsockopt(zmq.SNDTIMEO, 0)
            if curve is not None:
                self._setup_curve(curve)
            try:
                self.sock.bind(bind)
            except zmq.ZMQError as exc:
                raise ServerConfigError(f"cannot bind {bind}: {exc}") from exc
        except Exception:
            self._release()
            raise
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread: threading.Thread | None = None

    def _setup_curve(self, curve: CurveConfig) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        try:
            public, secret = zmq.auth.load_certificate(curve.secret_key_file)
        except (OSError, ValueError) as exc:
            raise ServerConfigError(f"cannot read CurveZMQ server certificate {curve.secret_key_file}: {exc}") from exc
        if not secret:
            raise ServerConfigError(f"{curve.secret_key_file} holds no secret key (pass the *.key_secret file)")
        auth = self._auth = ThreadAuthenticator(self._ctx)
        auth.start()
        if curve.public_keys_dir is not None:
            if not os.path.isdir(curve.public_keys_dir):
                raise ServerConfigError(f"--curve-public-keys {curve.public_keys_dir} is not a directory")
            auth.configure_curve(domain="*", location=curve.public_keys_dir)
        else:
            log.warning("CurveZMQ without a client key directory: traffic is encrypted but ANY client is accepted")
            auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self.sock.curve_secretkey = secret
        self.sock.curve_publickey = public
        self.sock.curve_server = True

    # ------------------------------------------------------------ planner -> socket
    def _on_result(self, tag: Any, chunk: P.ActionChunk | None, err: Exception | None,
                   obs: P.Observation) -> None:
        """Runs in the planner thread: send the reply (one non-blocking send, under the lock)."""
        if chunk is not None:
            payload = P.encode(chunk.to_msg())
        else:
            payload = P.encode(P.error_msg(P.E_ENGINE, f"planning failed for observation {obs.seq}: {err}", seq=obs.seq))
        with self._sock_lock:
            if self._closed:
                return
            self._send(tag, payload)
            # the send may have consumed the descriptor's notice of a request that arrived
            waiting = self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN
        if waiting:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:  # BlockingIOError: pipe full, the socket thread is already due to wake
            pass  # (nothing else is expected: the pipe lives as long as the server object)

    # ------------------------------------------------------------ socket loop
    def start(self) -> PlannerServer:
        """Serve from a background thread (tests, embedding); ``stop()`` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, name="planner-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End ``serve_forever`` (safe from a signal handler: it sets a flag and writes a byte
        to the pipe, nothing that takes a lock); closes a never-served server."""
        self._stop.set()
        self._wake()  # the socket thread returns at once, not after its poll timeout
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif self._thread is None and not self._serving:
            self._release()

    def serve_forever(self, freeze_gc: bool | None = None) -> None:
        """Serve until ``stop()``. ``freeze_gc`` (default: when called from the main thread,
        i.e. a dedicated service process such as ``planner-runtime serve``) moves every object
        that exists now (modules, engine, numpy) out of the garbage collector's view with
        ``gc.freeze()``: a full collection would otherwise walk them all (~8 ms measured
        here) in the middle of some request."""
        if self._closed:
            raise RuntimeError("this server was stopped; create a new one")
        self._serving = True
        if freeze_gc is None:
            freeze_gc = threading.current_thread() is threading.main_thread()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        self.planner.start()
        # Raw descriptors only: waiting here never touches the socket, so the sampler thread
        # may send meanwhile (under the lock).
        poller = zmq.Poller()
        poller.register(self.sock.getsockopt(zmq.FD), zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        log.info("serving on %s (engine %s, %s graph)", self.endpoint, self.engine.backend, self.spec.graph,
                 extra={"event": "start", "endpoint": self.endpoint})
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(self.poll_ms))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                # After any wake-up (or the timeout, a backstop): read what is waiting. The
                # check is one ZMQ_EVENTS call when nothing is.
                self._drain_requests()
                if not events and self.owner is not None:
                    # a quiet poll: log a lapse when it happens, not at the next request (the
                    # requests themselves check it, so a busy socket needs no extra lock here)
                    with self._sock_lock:
                        self._check_lapse(time.monotonic())
        finally:
            self._shutdown()

    def _drain_requests(self, limit: int = 1000) -> None:
        # Read everything waiting before planning picks the newest observation: a burst is
        # collapsed into one slot update instead of growing a queue. The lock is taken per
        # message, so the sampler thread's send never waits for a whole burst.
        for _ in range(limit):
            with self._sock_lock:
                more = self._handle_one()
            if not more:
                return
        self._wake()  # more than ``limit`` waiting: come back after a look at the pipe

    def _handle_one(self) -> bool:
        """Receive and answer one message (lock held); False when none was waiting."""
        sock = self.sock
        # ZMQ_EVENTS instead of a recv that fails with zmq.Again: cheaper.
        if self._closed or not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return False
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        self.counters["rx"] += 1
        ident = frames[0]
        if len(frames) != 2:
            self._reply_error(ident, P.ProtocolError(
                P.E_BAD_FRAME, f"expected one message frame, got {len(frames) - 1}"))
            return True
        try:
            self._handle(ident, frames[1])
        except P.ProtocolError as exc:
            self._reply_error(ident, exc)
        except Exception as exc:  # never let one message kill the loop
            log.exception("internal error handling a message")
            self._reply_error(ident, P.ProtocolError(P.E_INTERNAL, f"{type(exc).__name__}: {exc}"))
        return True

    def _handle(self, ident: bytes, data: bytes) -> None:
        msg = P.decode(data)
        t = msg["type"]
        req = msg.get("req") if isinstance(msg.get("req"), int) else None
        if t == "observation":
            obs = P.Observation.from_msg(msg, self.spec.S, self.spec.C, self.spec.A, self.spec.H)
            if obs.committed is not None and not getattr(self.engine, "inpaints", False):
                raise P.ProtocolError(
                    P.E_BAD_FIELD, "committed: this engine was exported without the committed-prefix "
                    "inputs; re-export it (planner-runtime export) or run the controller with "
                    "--merge aligned", req, obs.seq)
            self._admit(ident, msg, "observation", req, obs.seq)
            self.planner.submit(obs, tag=ident)
        elif t == "hello":
            reply = dict(self.metadata)
            if "profile" in msg:
                reply["profile_check"] = profile_problems(self.engine.manifest, msg["profile"])
            self._reply(ident, {**reply, **({"req": req} if req is not None else {})})
        elif t == "ping":
            self._reply(ident, self.health(req))
        elif t == "claim":
            self._claim(ident, msg, req)
        elif t == "release":
            self._release_owner(ident, msg, req)
        elif t == "reset":
            self._admit(ident, msg, "reset", req, None)
            self.planner.reset()
            log.info("reset: next plan starts cold", extra={"event": "reset"})
            self._reply(ident, {"type": "ack", "for": "reset", **({"req": req} if req is not None else {})})
        else:
            raise P.ProtocolError(P.E_UNKNOWN_TYPE, f"{t!r} is not a request this server accepts "
                                  "(requests: hello, ping, claim, release, reset, observation)", req)

    # ------------------------------------------------------------ ownership (lock held)
    @staticmethod
    def _session_of(msg: dict[str, Any], req: int | None, seq: int | None) -> int | None:
        s = msg.get("session")
        if s is None:
            return None
        if type(s) is not int:
            raise P.ProtocolError(P.E_BAD_FIELD, f"{msg['type']}: session must be an int, got {type(s).__name__}",
                                  req, seq)
        return s

    def _check_lapse(self, now: float) -> None:
        o = self.owner
        if o is not None and now - o.last_seen > self.owner_timeout:
            self.ownership["lapses"] += 1
            self._drop_owner(f"lapsed: no observation for {now - o.last_seen:.2f} s "
                             f"(owner timeout {self.owner_timeout:g} s)", "owner_lapsed")

    def _drop_owner(self, why: str, event: str) -> None:
        o = self.owner
        if o is None:
            return
        self.owner = None
        log.info("client %s no longer owns the planner: %s", o.ident.hex(), why,
                 extra={"event": event, "client": o.ident.hex()})

    def _new_owner(self, ident: bytes, now: float, explicit: bool, profile: Any) -> Owner:
        name = profile.get("name") if isinstance(profile, dict) else None
        self.owner = Owner(ident, secrets.randbits(62), explicit, now, now,
                           str(name) if name is not None else None)
        if self.ownership["claims"] + self.ownership["implicit_claims"] > 0:
            self.planner.reset()  # a new owner never warm-starts from the last owner's plan
        self.ownership["claims" if explicit else "implicit_claims"] += 1
        log.info("client %s owns the planner (%s)", ident.hex(), "claim" if explicit else "first observation",
                 extra={"event": "owner", "client": ident.hex(), "explicit": explicit, "profile": name})
        return self.owner

    def _busy(self, what: str, now: float, req: int | None, seq: int | None,
              lost: bool = False) -> P.ProtocolError:
        o = self.owner
        assert o is not None
        idle = now - o.last_seen
        left = max(0.0, self.owner_timeout - idle)
        self.ownership["busy_replies"] += 1
        first = "your session ended and " if lost else ""
        return P.ProtocolError(
            P.E_BUSY,
            f"{what} refused: {first}another client owns the planner (client {o.ident.hex()}, "
            f"{'claimed' if o.explicit else 'by its first observation'} {now - o.since:.1f} s ago, last "
            f"observation {idle:.2f} s ago). Ownership lapses after {self.owner_timeout:g} s without "
            "its observations or when it releases; hello and ping work meanwhile.",
            req, seq, {"retry_after_s": round(left, 3) if math.isfinite(left) else None})

    def _admit(self, ident: bytes, msg: dict[str, Any], what: str, req: int | None, seq: int | None) -> None:
        """Let an observation (or reset) through only from the owner; an implicit claim
        when nobody owns the planner. Raises ``busy`` / ``session_lost`` otherwise."""
        now = time.monotonic()
        session = self._session_of(msg, req, seq)
        self._check_lapse(now)
        o = self.owner
        if session is not None:
            if o is not None and o.session == session:
                o.ident = ident  # the same owner, maybe over a new connection
                o.last_seen = now
                return
            if o is not None and o.ident != ident:
                self.ownership["session_lost_replies"] += 1
                raise self._busy(what, now, req, seq, lost=True)
            self.ownership["session_lost_replies"] += 1
            raise P.ProtocolError(
                P.E_SESSION_LOST,
                f"{what} refused: session {session} is not held by this service (it restarted, or the "
                "session lapsed or was released); claim the planner again", req, seq)
        if o is None:
            if what == "observation":
                self._new_owner(ident, now, explicit=False, profile=None)
            return
        if o.ident == ident:
            o.last_seen = now
            return
        raise self._busy(what, now, req, seq)

    def _claim(self, ident: bytes, msg: dict[str, Any], req: int | None) -> None:
        now = time.monotonic()
        session = self._session_of(msg, req, None)
        profile = msg.get("profile")
        problems = profile_problems(self.engine.manifest, profile) if profile is not None else []
        if problems:
            raise P.ProtocolError(P.E_PROFILE_MISMATCH, "the robot profile does not fit this engine: "
                                  + "; ".join(problems), req, None, {"problems": problems})
        self._check_lapse(now)
        o = self.owner
        renewed = o is not None and (o.ident == ident or (session is not None and o.session == session))
        if o is not None and not renewed:
            raise self._busy("claim", now, req, None)
        if o is not None and renewed:
            o.ident, o.last_seen = ident, now
            if not o.explicit:
                o.explicit = True
                self.ownership["claims"] += 1
            if isinstance(profile, dict) and profile.get("name") is not None:
                o.profile_name = str(profile["name"])
        else:
            o = self._new_owner(ident, now, explicit=True, profile=profile)
        self._reply(ident, {"type": "claimed", "session": o.session,
                            "owner_timeout_s": self.metadata["owner_timeout_s"],
                            "identity": self.metadata["identity"], "renewed": renewed,
                            "profile_check": problems, **({"req": req} if req is not None else {})})

    def _release_owner(self, ident: bytes, msg: dict[str, Any], req: int | None) -> None:
        session = self._session_of(msg, req, None)
        o = self.owner
        mine = o is not None and (o.ident == ident or (session is not None and o.session == session))
        if mine:
            self.ownership["releases"] += 1
            self._drop_owner("released by its owner", "owner_released")
            self.planner.reset()
        self._reply(ident, {"type": "ack", "for": "release", "released": mine,
                            **({"req": req} if req is not None else {})})

    def owner_info(self) -> dict[str, Any] | None:
        o = self.owner
        if o is None:
            return None
        now = time.monotonic()
        return {"client": o.ident.hex(), "explicit": o.explicit, "profile": o.profile_name,
                "held_s": round(now - o.since, 3), "idle_s": round(now - o.last_seen, 3)}

    def status(self) -> str:
        """"ok", "planner_stopped" (sampler thread gone) or "engine_failing" (last plan failed)."""
        if not self.planner.alive:
            return "planner_stopped"
        if self.planner.stats["consecutive_errors"] > 0:
            return "engine_failing"
        return "ok"

    def health(self, req: int | None = None) -> dict[str, Any]:
        st = self.planner.stats
        out: dict[str, Any] = {
            "type": "health", "status": self.status(), "uptime_s": time.monotonic() - self._t_start,
            "backend": self.engine.backend, "plans": st["plans"], "cold": st["cold"], "warm": st["warm"],
            "received": st["received"], "replaced": st["replaced"], "discarded": st["discarded"],
            "engine_errors": st["errors"], "cold_reasons": dict(st["cold_reasons"]),
            "last_infer_ms": st["last_infer_ms"], "last_plan_id": st["last_plan_id"],
            "busy": self.planner.busy, "pending": self.planner.pending,
            "counters": dict(self.counters), "error_counts": dict(self.error_counts),
            "pid": os.getpid(), "torch_loaded": "torch" in sys.modules,
            "ownership": {"owner": self.owner_info(), "owner_timeout_s": self.metadata["owner_timeout_s"],
                          **self.ownership},
        }
        if req is not None:
            out["req"] = req
        return out

    def _reply(self, ident: bytes, msg: dict[str, Any]) -> None:
        self._send(ident, P.encode(msg))

    def _reply_error(self, ident: bytes, exc: P.ProtocolError) -> None:
        self.error_counts[exc.code] = self.error_counts.get(exc.code, 0) + 1
        refused = exc.code in (P.E_BUSY, P.E_SESSION_LOST, P.E_PROFILE_MISMATCH)
        self.counters["errors_sent"] += 1
        now = time.monotonic()
        if now - self._log_window[0] >= 1.0:
            if self._log_window[1] > LOG_BAD_PER_S:
                log.warning("%d more bad messages not logged", self._log_window[1] - LOG_BAD_PER_S,
                            extra={"event": "bad_message_suppressed"})
            self._log_window = [now, 0]
        self._log_window[1] += 1
        if self._log_window[1] <= LOG_BAD_PER_S:  # a flood of garbage must not flood the log
            if refused:  # a well-formed request this client may not make now: not a bad message
                log.info("refused client %s: %s", ident.hex(), exc,
                         extra={"event": "refused", "code": exc.code, "client": ident.hex()})
            else:
                log.warning("bad message from client %s: %s", ident.hex(), exc,
                            extra={"event": "bad_message", "code": exc.code, "client": ident.hex()})
        self._send(ident, P.encode(P.error_msg(exc.code, exc.message, exc.req, exc.seq, **exc.extra)))

    def _send(self, ident: bytes, payload: bytes) -> None:
        try:
            self.sock.send_multipart([ident, payload], zmq.NOBLOCK)
            self.counters["tx"] += 1
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the client went away; EAGAIN: it stopped reading. Drop, keep serving.
            self.counters["send_dropped"] += 1
            log.info("reply to client %s dropped: %s", ident.hex(), exc,
                     extra={"event": "send_dropped", "client": ident.hex()})
            if exc.errno == zmq.EHOSTUNREACH and self.owner is not None and self.owner.ident == ident:
                self.ownership["disconnects"] += 1
                self._drop_owner("its connection is gone", "owner_disconnected")

    def _release(self) -> None:
        with self._sock_lock:  # a late result from a planner thread that overran stop() waits
            if self._closed:
                return
            self._closed = True
            self.sock.close(0)
        if self._auth is not None:
            self._auth.stop()

    def _shutdown(self) -> None:
        ok = self.planner.stop()
        if not ok:
            log.warning("planner thread did not finish within the timeout")
        self._release()
        self._serving = False
        log.info("stopped after %d plans", self.planner.stats["plans"], extra={"event": "stop"})


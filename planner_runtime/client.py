"""The client library of the planner service (used by robot/, sim/ and third-party code).

``PlannerClient`` talks to ``planner-runtime serve`` over a ZeroMQ DEALER socket:
``send_observation`` never blocks (an observation that cannot be queued right now is
dropped and counted: the next one is newer anyway), ``poll_chunk`` returns the newest chunk
that has arrived, and the request methods (``hello``, ``ping``, ``reset``) wait with a
timeout and raise ``PlannerTimeout`` when the server is gone, or ``ServerError`` when it
answered with an error frame. The socket reconnects by itself when the server restarts.

Ownership (``planner_runtime.protocol``): the service plans for one client at a time.
``claim(profile)`` takes the planner (the reply carries the engine's identity and a session
token that every later observation carries), ``release()`` gives it up, and
``claim_nowait`` sends a claim without waiting (its reply is taken in by ``poll_chunk``: a
control loop must not block). A client that sends observations without claiming owns the
planner implicitly when nobody else does. When another client owns it, observations are
answered with a ``busy`` error, raised by ``poll_chunk`` as ``PlannerBusy``; an observation
whose session the service no longer holds raises ``SessionLost``; in both cases
``session`` is None afterwards and the caller decides whether to claim again.

Executing the chunks (which action applies now, how a late chunk takes over, the committed
actions to send with the next observation) is ``planner_runtime.chunking.ChunkExecutor``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from planner_runtime import protocol as P
from planner_runtime.protocol import ActionChunk, Observation


class PlannerError(RuntimeError):
    """Base class of client-side planner service errors."""


class PlannerTimeout(PlannerError, TimeoutError):
    """No answer within the timeout: the service is down, unreachable or stuck."""


class ServerError(PlannerError):
    """The server answered with an error frame."""

    def __init__(self, code: str, message: str, seq: int | None = None, req: int | None = None):
        super().__init__(f"planner service error {code}: {message}")
        self.code = code
        self.message = message
        self.seq = seq
        self.req = req


class PlannerBusy(ServerError):
    """Another client owns the planner (error code ``busy``); ``retry_after_s`` says when
    its ownership lapses at the earliest (None: it only ends by release or disconnect)."""

    def __init__(self, code: str, message: str, seq: int | None = None, req: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(code, message, seq, req)
        self.retry_after_s = retry_after_s


class SessionLost(ServerError):
    """The service does not hold this client's session any more (error ``session_lost``):
    it restarted, or the session lapsed or was released. Claim again."""


class ProfileMismatch(ServerError):
    """The robot profile sent with a claim does not fit the engine (``profile_mismatch``);
    ``problems`` lists every mismatch."""

    def __init__(self, code: str, message: str, seq: int | None = None, req: int | None = None,
                 problems: list[str] | None = None):
        super().__init__(code, message, seq, req)
        self.problems = list(problems or [])


def server_error(msg: dict[str, Any]) -> ServerError:
    """The exception for an ``error`` reply, by its code."""
    code, text = str(msg.get("code", "?")), str(msg.get("message", ""))
    seq = msg.get("seq") if isinstance(msg.get("seq"), int) else None
    req = msg.get("req") if isinstance(msg.get("req"), int) else None
    if code == P.E_BUSY:
        r = msg.get("retry_after_s")
        return PlannerBusy(code, text, seq, req, float(r) if isinstance(r, (int, float)) else None)
    if code == P.E_SESSION_LOST:
        return SessionLost(code, text, seq, req)
    if code == P.E_PROFILE_MISMATCH:
        probs = msg.get("problems")
        return ProfileMismatch(code, text, seq, req, [str(p) for p in probs] if isinstance(probs, list) else None)
    return ServerError(code, text, seq, req)


class PlannerClient:
    """Connection to one planner service. Not thread-safe: use it from one thread."""

    def __init__(self, endpoint: str, *, timeout: float = 1.0, resend_interval: float = 0.25,
                 curve_server_key: bytes | str | None = None, curve_client_cert: str | None = None,
                 clock: Callable[[], float] = time.monotonic, context: zmq.Context | None = None):
        """``curve_server_key``: the server's public key (z85) or its ``.key`` file;
        ``curve_client_cert``: this client's ``.key_secret`` file (needed with a key)."""
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.resend_interval = float(resend_interval)
        self.clock = clock
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Queue only on live connections: an observation sent while the server is down
        # must not be delivered, stale, after it comes back.
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * P.MAX_MESSAGE_BYTES)
        if curve_server_key is not None:
            self._setup_curve(curve_server_key, curve_client_cert)
        self.sock.connect(endpoint)
        self._req = 0
        self._seq = -1
        self._newest: ActionChunk | None = None
        self._replies: dict[int, dict[str, Any]] = {}
        self._errors: deque[ServerError] = deque(maxlen=64)
        self._pending_reqs: set[int] = set()
        self.stats = {"sent": 0, "send_dropped": 0, "chunks": 0, "errors": 0, "superseded": 0,
                      "busy": 0, "session_lost": 0, "claims": 0}
        self.last_rx: float | None = None
        # Ownership: the session token from the last ``claimed`` reply (None: not an explicit
        # owner), the engine identity it carried, and a claim sent without waiting.
        self.session: int | None = None
        self.identity: dict[str, Any] | None = None
        self.owner_timeout: float | None = None
        self._claim_req: int | None = None
        self.claim_error: ServerError | None = None
        self.last_claimed: dict[str, Any] | None = None  # the newest ``claimed`` reply

    def _setup_curve(self, server_key: bytes | str, client_cert: str | None) -> None:
        import zmq.auth

        if client_cert is None:
            raise ValueError("CurveZMQ needs this client's certificate (curve_client_cert=*.key_secret)")
        if isinstance(server_key, str) and len(server_key) != 40:  # a path, not a z85 key
            server_key, _ = zmq.auth.load_certificate(server_key)
        pub, sec = zmq.auth.load_certificate(client_cert)
        if not sec:
            raise ValueError(f"{client_cert} holds no secret key (pass the *.key_secret file)")
        self.sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
        self.sock.curve_publickey = pub
        self.sock.curve_secretkey = sec

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> PlannerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ observations and chunks
    def send_observation(self, state: np.ndarray, cond: np.ndarray, stamp: float | None = None,
                         seq: int | None = None, committed: np.ndarray | None = None) -> int | None:
        """Queue an observation without blocking; returns its seq, or None if dropped
        (no connection to the server right now). ``committed``: the actions the robot runs
        while this plan is computed ([n, A]; planner_runtime.chunking)."""
        self._seq = self._seq + 1 if seq is None else int(seq)
        obs = Observation(self._seq, self.clock() if stamp is None else float(stamp),
                          P.as_f32(state), P.as_f32(cond),
                          None if committed is None else P.as_f32(committed))
        msg = obs.to_msg()
        if self.session is not None:
            msg["session"] = self.session
        return self._seq if self.send_raw(P.encode(msg)) else None

    def send_raw(self, payload: bytes) -> bool:
        """Send already-encoded bytes without blocking (also used by tests for bad input)."""
        try:
            self.sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["send_dropped"] += 1
            return False
        self.stats["sent"] += 1
        return True

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        """The newest chunk received since the last call (None if none), waiting up to
        ``timeout`` s for one. Raises ServerError for an error frame that arrived."""
        deadline = self.clock() + timeout
        while True:
            self._drain(0.0)
            if self._errors:
                raise self._errors.popleft()
            if self._newest is not None:
                out, self._newest = self._newest, None
                return out
            left = deadline - self.clock()
            if left <= 0:
                return None
            self._drain(left)

    def wait_chunk(self, seq: int | None = None, timeout: float | None = None) -> ActionChunk:
        """Wait for a chunk answering observation ``seq`` or a newer one (any when None)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = self.clock() + timeout
        while True:
            ch = self.poll_chunk(max(0.0, deadline - self.clock()))
            if ch is not None and (seq is None or ch.obs_seq >= seq):
                return ch
            if self.clock() >= deadline:
                raise PlannerTimeout(
                    f"no chunk{'' if seq is None else f' for observation {seq}'} from {self.endpoint} "
                    f"within {timeout:.3g} s (is `planner-runtime serve` running?)")

    def _drain(self, timeout: float) -> None:
        """Receive everything available (waiting up to ``timeout`` for the first)."""
        sock = self.sock
        if timeout > 0 and not sock.poll(int(timeout * 1000) + 1, zmq.POLLIN):
            return
        # ZMQ_EVENTS says whether a message is waiting without a failing recv (a raised
        # zmq.Again per drain costs more than the check, and this is on the latency path).
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_rx = self.clock()
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = P.decode(data, max_bytes=4 * P.MAX_MESSAGE_BYTES)
            t = msg["type"]
            if t == "chunk":
                ch = ActionChunk.from_msg(msg)
                ch.received_at = self.last_rx
                self.stats["chunks"] += 1
                if self._newest is not None:  # two chunks in one poll: keep the newer
                    self.stats["superseded"] += 1
                    if ch.obs_seq < self._newest.obs_seq:
                        return
                self._newest = ch
            elif t == "error":
                self.stats["errors"] += 1
                err = server_error(msg)
                if isinstance(err, (PlannerBusy, SessionLost)):
                    self.stats["busy" if isinstance(err, PlannerBusy) else "session_lost"] += 1
                    self.session = None  # whatever we held, we do not own the planner now
                if err.req is not None and err.req == self._claim_req:
                    self._claim_req = None
                    self.claim_error = err
                if err.req is not None and err.req in self._pending_reqs:
                    self._replies[err.req] = msg
                else:
                    self._errors.append(err)
            else:
                if t == "claimed":
                    self._take_claim(msg)
                if isinstance(msg.get("req"), int):
                    self._replies[msg["req"]] = msg
        except P.ProtocolError as exc:  # a reply we cannot read is the server's bug: surface it
            self._errors.append(ServerError(exc.code, f"unreadable reply from server: {exc.message}"))

    # ------------------------------------------------------------ requests
    def request(self, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for its reply (resent while unanswered: requests are
        idempotent). Raises PlannerTimeout or ServerError."""
        timeout = self.timeout if timeout is None else timeout
        self._req += 1
        req = self._req
        payload = P.encode({**msg, "req": req})
        self._pending_reqs = self._pending_reqs | {req}
        deadline = self.clock() + timeout
        next_send = self.clock()
        try:
            while True:
                now = self.clock()
                if now >= next_send:
                    # A send can fail while (re)connecting; retry until the deadline.
                    try:
                        self.sock.send(payload, zmq.NOBLOCK)
                        next_send = now + self.resend_interval
                    except zmq.Again:
                        next_send = now + 0.01
                if req in self._replies:
                    reply = self._replies.pop(req)
                    if reply.get("type") == "error":
                        raise server_error({**reply, "req": req})
                    return reply
                if now >= deadline:
                    raise PlannerTimeout(
                        f"no reply to {msg['type']!r} from {self.endpoint} within {timeout:.3g} s "
                        "(is `planner-runtime serve` running and reachable?)")
                self._drain(max(0.0, min(deadline, next_send) - now))
        finally:
            self._pending_reqs = self._pending_reqs - {req}
            self._replies.pop(req, None)


    def hello(self, timeout: float | None = None, profile: dict[str, Any] | None = None) -> dict[str, Any]:
        """The service's metadata (dimensions, dt, chunk, manifest, the engine ``identity``);
        also a readiness check. With ``profile`` the reply's ``profile_check`` lists how the
        engine does not fit that robot profile (empty: it fits)."""
        msg: dict[str, Any] = {"type": "hello"}
        if profile is not None:
            msg["profile"] = profile
        return self.request(msg, timeout)

    # ------------------------------------------------------------ ownership
    def _claim_msg(self, profile: dict[str, Any] | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "claim"}
        if profile is not None:
            msg["profile"] = profile
        if self.session is not None:
            msg["session"] = self.session
        return msg

    def _take_claim(self, msg: dict[str, Any]) -> None:
        s = msg.get("session")
        if type(s) is int:
            self.session = s
            ident = msg.get("identity")
            self.identity = ident if isinstance(ident, dict) else None
            to = msg.get("owner_timeout_s")
            self.owner_timeout = float(to) if isinstance(to, (int, float)) else None
            self.claim_error = None
            self.last_claimed = msg
            self.stats["claims"] += 1
        if msg.get("req") == self._claim_req:
            self._claim_req = None

    def claim(self, profile: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Own the planner: returns the ``claimed`` reply (session, identity, owner_timeout_s).
        Raises ``PlannerBusy`` when another client owns it, ``ProfileMismatch`` when the
        profile does not fit the engine, ``PlannerTimeout`` when nobody answers."""
        return self.request(self._claim_msg(profile), timeout)

    def claim_nowait(self, profile: dict[str, Any] | None = None) -> int | None:
        """Send a claim without waiting (for a control loop); returns its req id, or None when
        it could not be queued. The reply is taken in while ``poll_chunk`` drains: a grant
        sets ``session`` / ``identity``; a refusal is raised by ``poll_chunk`` and kept in
        ``claim_error``."""
        self._req += 1
        req = self._req
        try:
            self.sock.send(P.encode({**self._claim_msg(profile), "req": req}), zmq.NOBLOCK)
        except zmq.Again:
            return None
        self._claim_req = req
        self.claim_error = None
        return req

    @property
    def claim_pending(self) -> bool:
        return self._claim_req is not None

    def release(self, timeout: float | None = None) -> bool:
        """Give the planner up; True if this client held it."""
        msg: dict[str, Any] = {"type": "release"}
        if self.session is not None:
            msg["session"] = self.session
        reply = self.request(msg, timeout)
        self.session = None
        return bool(reply.get("released"))

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Health and counters of the service."""
        return self.request({"type": "ping"}, timeout)

    def reset(self, timeout: float | None = None) -> None:
        """Make the next plan start cold (e.g. after the robot was repositioned)."""
        self.request({"type": "reset"}, timeout)
        self._newest = None

def wait_for_service(client: PlannerClient, proc: Any, timeout: float) -> dict[str, Any]:
    """The metadata of a service started as ``proc`` (a ``subprocess.Popen``) once it answers
    ``client``'s hello; RuntimeError at once if the process exits first (with its stderr
    tail when that is a pipe), or after ``timeout`` s without an answer."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read() if getattr(proc, "stderr", None) is not None else ""
            tail = (err or "").strip()[-1000:]
            raise RuntimeError(f"the planner service exited with {proc.returncode} before answering"
                               + (f": {tail}" if tail else ""))
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"the planner service at {client.endpoint} did not answer within {timeout} s")
        try:
            return client.hello(timeout=min(1.0, max(0.05, left)))
        except PlannerTimeout:
            continue


def main(argv: list[str] | None = None) -> int:
    """``python -m planner_runtime.client ping|hello ENDPOINT``: print the reply as JSON.

    Exit 0 when the service answers and its status is ok (a container health check), 1 when
    it answers with another status, 2 when it does not answer in time.
    """
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m planner_runtime.client", description=main.__doc__)
    ap.add_argument("what", choices=["ping", "hello"])
    ap.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
    with PlannerClient(args.endpoint, timeout=args.timeout) as c:
        try:
            reply = c.ping() if args.what == "ping" else c.hello()
        except PlannerTimeout as exc:
            print(json.dumps({"error": "timeout", "message": str(exc)}))
            return 2
    print(json.dumps(reply, default=str))
    return 0 if args.what == "hello" or reply.get("status") == "ok" else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())

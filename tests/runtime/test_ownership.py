"""One owner for the planner: claim, busy, lapse, release, sessions, over real sockets.

Every test runs the real ``PlannerServer`` on an ephemeral loopback port with the tiny real
engine (conftest.py) and talks to it through real ZeroMQ DEALER clients.
"""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

from planner_runtime import protocol as P
from planner_runtime.client import (
    PlannerBusy,
    PlannerClient,
    ProfileMismatch,
    ServerError,
    SessionLost,
)
from planner_runtime.server import PlannerServer, ServerConfigError


@pytest.fixture
def owned_server(engine, spec, endpoint):
    made = []

    def make(owner_timeout: float = 30.0) -> PlannerServer:
        srv = PlannerServer(engine, spec, bind=endpoint, seed=0, owner_timeout=owner_timeout).start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


def _client(srv: PlannerServer) -> PlannerClient:
    return PlannerClient(srv.endpoint, timeout=5.0)


def _reply_to(c: PlannerClient, seq: int, timeout: float = 5.0):
    """The chunk answering ``seq`` or the error raised for it; None if nothing came."""
    try:
        return c.wait_chunk(seq, timeout=timeout)
    except ServerError as exc:
        return exc
    except TimeoutError:
        return None


def test_200_concurrent_clients_every_one_gets_a_chunk_or_busy(owned_server, make_obs):
    srv = owned_server(owner_timeout=60.0)
    n = 200
    clients = [_client(srv) for _ in range(n)]
    try:
        for c in clients:  # connected (hello works for everyone), nobody owns anything yet
            assert c.hello()["identity"]["graph_sha256"] == srv.metadata["identity"]["graph_sha256"]
        assert srv.health()["ownership"]["owner"] is None
        x, cond = make_obs()
        seqs = [c.send_observation(x, cond) for c in clients]  # all at once, one each
        assert None not in seqs
        replies = [_reply_to(c, s) for c, s in zip(clients, seqs, strict=True)]
        chunks = [i for i, r in enumerate(replies) if isinstance(r, P.ActionChunk)]
        busy = [i for i, r in enumerate(replies) if isinstance(r, PlannerBusy)]
        silent = [i for i, r in enumerate(replies) if r is None]
        assert silent == [] and len(chunks) == 1 and len(busy) == n - 1, (chunks, busy, silent, replies[:3])
        # the one that got the chunk is the owner; every busy reply says when to retry
        h = clients[busy[0]].ping()  # a non-owner may still read health
        assert h["ownership"]["owner"]["client"] and not h["ownership"]["owner"]["explicit"]
        assert h["ownership"]["busy_replies"] == n - 1 and h["plans"] == 1
        assert all(0 < replies[i].retry_after_s <= 60.0 for i in busy)
        assert "another client owns the planner" in replies[busy[0]].message
    finally:
        for c in clients:
            c.close()


def test_claim_busy_then_lapse_after_the_owner_goes_quiet(owned_server, make_obs):
    srv = owned_server(owner_timeout=0.4)
    x, cond = make_obs()
    with _client(srv) as a, _client(srv) as b:
        got = a.claim()
        assert got["type"] == "claimed" and a.session == got["session"] and not got["renewed"]
        assert a.identity == srv.metadata["identity"] and got["owner_timeout_s"] == 0.4
        assert a.wait_chunk(a.send_observation(x, cond)).obs_seq == 0
        # b: observation, reset and claim are refused with busy; hello and ping are fine
        seq = b.send_observation(x, cond)
        with pytest.raises(PlannerBusy) as e:
            b.wait_chunk(seq, timeout=5.0)
        assert 0.0 <= e.value.retry_after_s <= 0.4
        with pytest.raises(PlannerBusy):
            b.reset()
        with pytest.raises(PlannerBusy):
            b.claim()
        assert b.ping()["status"] == "ok" and b.hello()["state_dim"] == srv.spec.S
        assert b.session is None
        # a claims again: the same session, renewed
        assert a.claim()["session"] == a.session and a.stats["claims"] == 2
        # a goes quiet longer than the owner timeout: its ownership lapses, b takes over
        time.sleep(0.6)
        seq = b.send_observation(x, cond)
        ch = b.wait_chunk(seq)
        assert ch.obs_seq == seq and ch.cold  # a new owner's first plan is cold
        h = b.ping()["ownership"]
        assert h["lapses"] == 1 and h["implicit_claims"] == 1 and h["claims"] == 1
        # a's next observation names its old session: refused, and a knows it lost it
        seq = a.send_observation(x, cond)
        with pytest.raises(PlannerBusy) as e:
            a.wait_chunk(seq, timeout=5.0)
        assert "your session ended" in e.value.message and a.session is None


def test_release_hands_the_planner_over_at_once(owned_server, make_obs):
    srv = owned_server(owner_timeout=60.0)
    x, cond = make_obs()
    with _client(srv) as a, _client(srv) as b:
        a.claim()
        assert a.wait_chunk(a.send_observation(x, cond)) is not None
        with pytest.raises(PlannerBusy):
            b.claim()
        assert a.release() is True and a.session is None
        assert srv.health()["ownership"]["owner"] is None
        assert b.claim()["session"] == b.session
        assert b.wait_chunk(b.send_observation(x, cond)).cold
        assert a.release() is False  # not the owner: acknowledged, nothing changes
        assert srv.health()["ownership"]["owner"]["explicit"]


def _rebind(start, tries: int = 40):
    """Start a server on the port a stopped one just released: ZeroMQ closes that socket in
    its I/O thread after stop() returns, so the bind can fail for a few milliseconds."""
    from planner_runtime.server import ServerConfigError

    for i in range(tries):
        try:
            return start()
        except ServerConfigError as exc:
            if "Address already in use" not in str(exc) or i == tries - 1:
                raise
            time.sleep(0.05)


def test_a_session_survives_a_new_connection_but_not_a_restart(engine, spec, endpoint, make_obs):
    x, cond = make_obs()
    srv = PlannerServer(engine, spec, bind=endpoint, owner_timeout=60.0).start()
    a = PlannerClient(endpoint, timeout=5.0)
    a2 = PlannerClient(endpoint, timeout=5.0)
    try:
        a.claim()
        a2.hello()
        # the same owner over another connection (as after a ZeroMQ reconnect): its token counts
        a2.session = a.session
        assert a2.wait_chunk(a2.send_observation(x, cond)) is not None
        srv.stop()
        srv = _rebind(lambda: PlannerServer(engine, spec, bind=endpoint, owner_timeout=60.0).start())
        a.hello(timeout=10.0)  # reconnected
        seq = a.send_observation(x, cond)
        with pytest.raises(SessionLost, match="claim the planner again"):
            a.wait_chunk(seq, timeout=5.0)
        assert a.session is None and srv.health()["ownership"]["owner"] is None
        got = a.claim()  # claims again: a new session, the same engine identity
        assert got["identity"] == srv.metadata["identity"]
        assert a.wait_chunk(a.send_observation(x, cond)) is not None
    finally:
        a.close()
        a2.close()
        srv.stop()


def test_claim_with_a_profile_that_does_not_fit_is_refused_and_takes_nothing(owned_server, spec):
    srv = owned_server()
    man = srv.engine.manifest
    fits = {"name": man.robot.name, "state_dim": spec.S, "action_dim": spec.A,
            "joint_names": list(man.action.joint_names), "policy_dt": spec.dt, "control_dt": spec.dt / 10,
            "action": {"type": "joint_position", "joint_pos_lower": [-1.0] * spec.A,
                       "joint_pos_upper": [1.0] * spec.A, "scale_range": [0.01, 1.0]}}
    wrong = {**fits, "joint_names": list(reversed(fits["joint_names"])), "policy_dt": 0.05,
             "control_dt": 0.003, "action": {**fits["action"], "joint_pos_lower": [0.5] * spec.A}}
    with _client(srv) as c:
        assert c.hello(profile=fits)["profile_check"] == []
        check = c.hello(profile=wrong)["profile_check"]
        assert any("joint order" in p for p in check) and any("control dt" in p for p in check)
        assert any("control periods" in p for p in check) and any("joint limits" in p for p in check)
        with pytest.raises(ProfileMismatch) as e:
            c.claim(profile=wrong)
        assert len(e.value.problems) == 4 and c.session is None
        assert srv.health()["ownership"]["owner"] is None
        # hostile profiles and sessions: an error reply each, never a crash
        with pytest.raises(ProfileMismatch, match="malformed|must be a map"):
            c.claim(profile={"joint_names": 5})
        with pytest.raises(ProfileMismatch, match="must be a map"):
            c.request({"type": "claim", "profile": [1, 2, 3]})
        with pytest.raises(ServerError) as e2:
            c.request({"type": "claim", "session": "not an int"})
        assert e2.value.code == P.E_BAD_FIELD
        assert c.claim(profile=fits)["profile_check"] == []
        assert srv.health()["ownership"]["owner"]["profile"] == man.robot.name


def test_hostile_ownership_messages_each_get_an_error_reply(owned_server, make_obs):
    srv = owned_server()
    x, cond = make_obs()
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(srv.endpoint)
    obs = P.Observation(0, 1.0, x, cond).to_msg()
    pk = lambda m: msgpack.packb({"v": P.PROTOCOL_VERSION, **m}, use_bin_type=True)  # noqa: E731
    cases = [
        ({**obs, "session": "abc"}, P.E_BAD_FIELD),
        ({**obs, "session": 1.5}, P.E_BAD_FIELD),
        ({**obs, "session": True}, P.E_BAD_FIELD),
        ({**obs, "session": 12345}, P.E_SESSION_LOST),  # nobody owns: a made-up session is refused
        ({"type": "release", "session": []}, P.E_BAD_FIELD),
        ({"type": "claim", "profile": {"action": "x"}}, P.E_PROFILE_MISMATCH),
        ({"type": "claim", "profile": {"action": {"kp_range": [1]}}}, P.E_PROFILE_MISMATCH),
        ({"type": "claim", "profile": {"control_dt": "fast"}}, P.E_PROFILE_MISMATCH),
        ({"type": "claimed", "session": 1}, None),  # a server-only type: not a request
    ]
    try:
        for msg, code in cases:
            raw.send(pk(msg))
            assert raw.poll(5000), msg
            rep = msgpack.unpackb(raw.recv(), raw=False)
            assert rep["type"] == "error", (msg, rep)
            assert rep["code"] == (code or P.E_UNKNOWN_TYPE), (msg, rep)
        assert srv.health()["status"] == "ok" and srv.health()["ownership"]["owner"] is None
        with _client(srv) as c:  # and it still plans
            c.hello()
            seq = c.send_observation(x, cond)
            assert seq is not None and c.wait_chunk(seq).obs_seq == seq
    finally:
        raw.close(0)


def test_owner_timeout_must_be_positive(engine, spec, endpoint):
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ServerConfigError, match="owner timeout"):
            PlannerServer(engine, spec, bind=endpoint, owner_timeout=bad)


def test_owner_whose_connection_is_gone_loses_the_planner(recording, spec, endpoint, make_obs, wait):
    # the recording engine holds the owner's plan until the owner has closed its socket
    srv = PlannerServer(recording, spec, bind=endpoint, owner_timeout=60.0).start()
    x, cond = make_obs()
    try:
        a = PlannerClient(endpoint, timeout=5.0)
        a.claim()
        recording.gate.clear()
        a.send_observation(x, cond)
        assert recording.entered.wait(5)
        a.close()
        time.sleep(0.3)  # the server's I/O thread sees the disconnect
        recording.gate.set()
        assert wait(lambda: srv.counters["send_dropped"] == 1)
        assert srv.health()["ownership"]["disconnects"] == 1
        with PlannerClient(endpoint, timeout=5.0) as b:  # no minute-long wait for a lapse
            first = b.claim()
            assert first["session"] == b.session and not first["renewed"]
            assert b.claim()["renewed"]
    finally:
        recording.gate.set()
        srv.stop()


def test_serve_owner_timeout_option(start_serve, serve_argv, endpoint, free_endpoint_port):
    import subprocess

    start_serve("--owner-timeout", "0.5")
    with PlannerClient(endpoint, timeout=30.0) as c:
        meta = c.hello(timeout=30.0)
        assert meta["owner_timeout_s"] == 0.5 and c.claim()["owner_timeout_s"] == 0.5
        assert c.ping()["ownership"]["owner_timeout_s"] == 0.5
    bad = subprocess.run(serve_argv(f"tcp://127.0.0.1:{free_endpoint_port}", "--owner-timeout", "0"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "owner timeout must be > 0" in bad.stderr

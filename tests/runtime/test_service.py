"""The service over real ZeroMQ sockets on ephemeral loopback ports."""

from __future__ import annotations

import math
import time

import msgpack
import numpy as np
import pytest

from planner_runtime import protocol as P
from planner_runtime.chunking import ChunkConfig, ChunkExecutor
from planner_runtime.client import PlannerClient, PlannerTimeout, ServerError
from planner_runtime.server import PlannerServer, ServerConfigError, is_loopback_endpoint


def test_round_trip(client, spec, make_obs):
    meta = client.hello()
    assert meta["type"] == "metadata" and meta["protocol"] == P.PROTOCOL_VERSION
    assert (meta["state_dim"], meta["action_dim"], meta["cond_dim"], meta["horizon"]) == (spec.S, spec.A, spec.C, spec.H)
    assert meta["dt"] == spec.dt and meta["chunk"] == spec.chunk
    assert "normalizer" not in meta["manifest"] and meta["manifest"]["dims"]["S"] == spec.S
    x, c = make_obs()
    seq = client.send_observation(x, c)
    ch = client.wait_chunk(seq)
    assert ch.obs_seq == seq and ch.plan_id == 1 and ch.cold
    assert ch.actions.shape == (spec.H, spec.A) and ch.states.shape == (spec.H, spec.S)
    assert np.all(np.isfinite(ch.actions))
    assert ch.received_at is not None and ch.received_at >= ch.t0
    assert {"infer_ms", "plan_ms", "queue_ms"} <= set(ch.timings)
    h = client.ping()
    assert h["status"] == "ok" and h["plans"] == 1  # torch_loaded: see test_serve_cli (here pytest imported torch to export)


def test_latest_observation_wins_under_a_burst(rec_server, rec_client, recording, spec, make_obs, wait):
    client = rec_client
    client.hello()
    x, c = make_obs()
    recording.gate.clear()  # hold the sampler inside its first plan
    first = client.send_observation(x, c)
    assert recording.entered.wait(5)
    n = 300
    seqs = [client.send_observation(x + 0.001 * i, c) for i in range(n)]
    assert None not in seqs
    # the socket thread took every observation while the sampler was busy ...
    assert wait(lambda: rec_server.planner.stats["received"] == n + 1)
    h = client.ping()
    assert h["busy"] and h["pending"] and h["replaced"] == n - 1
    recording.gate.set()
    # ... and the next plan answers the newest one: nothing queued in between
    ch = client.wait_chunk(seqs[-1])
    assert ch.obs_seq == seqs[-1]
    got = [ch.obs_seq]
    while (more := client.poll_chunk(0.2)) is not None:
        got.append(more.obs_seq)
    assert wait(lambda: rec_server.planner.stats["plans"] == 2)
    assert len(recording.calls) == 2
    np.testing.assert_allclose(recording.calls[1]["x0"][0], x + 0.001 * (n - 1), rtol=1e-6)
    assert first == 0 and not rec_server.planner.pending


def _obs(spec, **over):
    msg = P.Observation(0, 1.0, np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)).to_msg()
    msg.update(over)
    return {"v": P.PROTOCOL_VERSION, **msg}


def _bad_cases(spec):
    S, C = spec.S, spec.C
    nan_state = np.zeros(S, np.float32)
    nan_state[0] = math.nan
    inf_cond = np.zeros(C, np.float32)
    inf_cond[-1] = math.inf
    pk = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
    return {
        "garbage bytes": (b"\xc1\x00\xffnot msgpack at all", P.E_BAD_FRAME),
        "not a map": (pk([1, 2, 3]), P.E_BAD_FRAME),
        "wrong version": (pk({**_obs(spec), "v": 99}), P.E_BAD_VERSION),
        "no version": (pk({k: v for k, v in _obs(spec).items() if k != "v"}), P.E_BAD_VERSION),
        "unknown type": (pk({"v": 1, "type": "teleport"}), P.E_UNKNOWN_TYPE),
        "server-only type": (pk({"v": 1, "type": "chunk"}), P.E_UNKNOWN_TYPE),
        "wrong dtype": (pk(_obs(spec, state=P.pack_array(np.zeros(S, np.int64)))), P.E_BAD_DTYPE),
        "complex dtype": (pk(_obs(spec, state={"dtype": "<c8", "shape": [S], "bytes": b"\0" * 8 * S})), P.E_BAD_DTYPE),
        "object dtype": (pk(_obs(spec, state={"dtype": "|O", "shape": [S], "bytes": b"\0" * 8 * S})), P.E_BAD_DTYPE),
        "wrong shape": (pk(_obs(spec, state=P.pack_array(np.zeros(S + 1, np.float32)))), P.E_BAD_SHAPE),
        "bytes vs shape": (pk(_obs(spec, cond={"dtype": "<f4", "shape": [C], "bytes": b"\0" * 3})), P.E_BAD_SHAPE),
        "NaN": (pk(_obs(spec, state=P.pack_array(nan_state))), P.E_NOT_FINITE),
        "inf": (pk(_obs(spec, cond=P.pack_array(inf_cond))), P.E_NOT_FINITE),
        "NaN stamp": (pk(_obs(spec, stamp=math.nan)), P.E_NOT_FINITE),
        "oversize": (pk({**_obs(spec), "pad": b"\0" * (P.MAX_MESSAGE_BYTES + 10)}), P.E_TOO_LARGE),
        "missing state": (pk({k: v for k, v in _obs(spec).items() if k != "state"}), P.E_MISSING_FIELD),
        "missing seq": (pk({k: v for k, v in _obs(spec).items() if k != "seq"}), P.E_MISSING_FIELD),
        "seq wrong type": (pk(_obs(spec, seq="zero")), P.E_BAD_FIELD),
    }


def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(server, client, spec, make_obs):
    client.hello()
    for name, (payload, code) in _bad_cases(spec).items():
        assert client.send_raw(payload), name
        with pytest.raises(ServerError) as ei:
            client.poll_chunk(5.0)
        assert ei.value.code == code, f"{name}: {ei.value}"
        assert ei.value.message, name
    # a multi-frame message is refused too
    client.sock.send_multipart([b"a", b"b"])
    with pytest.raises(ServerError, match="one message frame") as ei:
        client.poll_chunk(5.0)
    assert ei.value.code == P.E_BAD_FRAME
    # an error reply names the observation it answers when it could be read
    client.send_raw(msgpack.packb(_obs(spec, seq=77, state=P.pack_array(np.zeros(spec.S + 2, np.float32)))))
    with pytest.raises(ServerError) as ei:
        client.poll_chunk(5.0)
    assert ei.value.seq == 77
    # still serving: a valid observation is answered, counters show every refusal
    x, c = make_obs()
    seq = client.send_observation(x, c)
    assert client.wait_chunk(seq).obs_seq == seq
    h = client.ping()
    assert h["plans"] == 1 and h["counters"]["errors_sent"] == len(_bad_cases(spec)) + 2
    assert set(h["error_counts"]) == {code for _, code in _bad_cases(spec).values()}


def test_request_errors_are_raised_by_the_request(client):
    with pytest.raises(ServerError, match="unknown_type"):
        client.request({"type": "metadata"})  # a reply type, not a request
    assert client.ping()["status"] == "ok"


def test_client_times_out_cleanly_when_no_server(endpoint, make_obs):
    with PlannerClient(endpoint, timeout=0.3) as c:
        with pytest.raises(PlannerTimeout, match="no reply to 'hello'"):
            c.hello()
        x, cond = make_obs()
        assert c.send_observation(x, cond) is None  # nothing queued for a dead server
        with pytest.raises(PlannerTimeout, match="no chunk"):
            c.wait_chunk(timeout=0.2)
        assert c.poll_chunk(0.05) is None


def test_server_gone_restart_and_reconnect(engine, spec, endpoint, make_obs):
    x, cond = make_obs()
    srv = PlannerServer(engine, spec, bind=endpoint).start()
    c = PlannerClient(endpoint, timeout=5.0)
    try:
        c.hello()
        assert c.wait_chunk(c.send_observation(x, cond)).plan_id == 1
        srv.stop()
        with pytest.raises(PlannerTimeout):
            c.ping(timeout=0.3)
        srv = PlannerServer(engine, spec, bind=endpoint).start()  # same address, new process state
        meta = c.hello(timeout=10.0)
        assert meta["horizon"] == spec.H
        seq = c.send_observation(x, cond)
        ch = c.wait_chunk(seq)
        assert ch.plan_id == 1 and ch.cold and ch.obs_seq == seq  # a fresh server starts cold
    finally:
        c.close()
        srv.stop()


def test_client_disconnect_mid_plan_and_a_new_client(rec_server, recording, spec, make_obs, wait):
    x, cond = make_obs()
    c1 = PlannerClient(rec_server.endpoint, timeout=5.0)
    c1.hello()
    recording.gate.clear()
    c1.send_observation(x, cond)
    assert recording.entered.wait(5)
    c1.close()  # gone before its chunk is ready
    time.sleep(0.3)  # the server's I/O thread sees the disconnect
    recording.gate.set()
    # the chunk for c1 cannot be delivered: dropped, and c1 (the planner's owner by its first
    # observation) no longer owns it, so a new client is served at once (no owner lapse wait)
    assert wait(lambda: rec_server.counters["send_dropped"] >= 1)
    assert rec_server.health()["ownership"]["owner"] is None
    with PlannerClient(rec_server.endpoint, timeout=5.0) as c2:
        c2.hello()
        seq = c2.send_observation(x, cond, stamp=0.0)
        assert c2.wait_chunk(seq).obs_seq == seq
        assert c2.ping()["plans"] == 2


def test_chunk_executor_skips_past_actions_and_rejects_expired(client, spec, make_obs):
    """Chunks from a real service through the runtime's chunk rules (aligned rows)."""
    ex = ChunkExecutor(ChunkConfig(merge="aligned", execute=spec.chunk), dt=spec.dt, horizon=spec.H)
    client.hello()
    x, cond = make_obs()
    seq = client.send_observation(x, cond, stamp=100.0)
    ch = client.wait_chunk(seq)
    t = 100.0 + 2.5 * spec.dt  # 2 rows' time has passed when the chunk arrives
    ch.received_at = t
    assert ex.offer(ch, t)
    np.testing.assert_array_equal(ex.action(t), ch.actions[2])
    assert ex.stats["skipped"] == 2
    t += 2 * spec.dt
    np.testing.assert_array_equal(ex.action(t), ch.actions[4])  # past the chunk size: still aligned
    assert ex.stats["skipped"] == 3
    assert ex.plan_age(t) == pytest.approx(4.5 * spec.dt)
    assert not ex.offer(ch, t)  # the same plan again: stale
    assert ex.rejected["older_than_current"] == 1
    seq2 = client.send_observation(x, cond, stamp=50.0)
    old = client.wait_chunk(seq2)
    assert not ex.offer(old, 50.0 + spec.H * spec.dt)  # past valid_until
    assert ex.rejected["expired"] == 1
    assert ex.action(ch.valid_until) is None  # the current chunk has run out: caller's watchdog acts
    assert ex.latency_stats()["n"] == 1 and ex.latency_stats()["median_ms"] == pytest.approx(2.5 * spec.dt * 1e3)


def test_loopback_rule(engine, spec):
    assert is_loopback_endpoint("tcp://127.0.0.1:5555") and is_loopback_endpoint("tcp://[::1]:1")
    assert is_loopback_endpoint("tcp://localhost:1") and is_loopback_endpoint("ipc:///tmp/x")
    for ep in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.123.10:5555", "tcp://eth0:5555"):
        assert not is_loopback_endpoint(ep)
    with pytest.raises(ServerConfigError, match="CurveZMQ"):
        PlannerServer(engine, spec, bind="tcp://0.0.0.0:5555")


def test_curve_authenticated_round_trip(tmp_path, engine, spec, endpoint, make_obs):
    import zmq.auth

    (tmp_path / "allowed").mkdir()
    (tmp_path / "other").mkdir()
    _, srv_secret = zmq.auth.create_certificates(str(tmp_path), "server")
    srv_public = str(tmp_path / "server.key")
    cli_pub, cli_sec = zmq.auth.create_certificates(str(tmp_path / "allowed"), "robot")
    _, bad_sec = zmq.auth.create_certificates(str(tmp_path / "other"), "intruder")
    from planner_runtime.server import CurveConfig

    srv = PlannerServer(engine, spec, bind=endpoint,
                        curve=CurveConfig(srv_secret, str(tmp_path / "allowed"))).start()
    try:
        with PlannerClient(endpoint, timeout=5.0, curve_server_key=srv_public,
                           curve_client_cert=cli_sec) as c:
            c.hello()
            x, cond = make_obs()
            assert c.wait_chunk(c.send_observation(x, cond)).plan_id == 1
        with PlannerClient(endpoint, timeout=0.5, curve_server_key=srv_public,
                           curve_client_cert=bad_sec) as intruder:
            with pytest.raises(PlannerTimeout):
                intruder.hello()
        with PlannerClient(endpoint, timeout=0.5) as plain:  # no encryption at all
            with pytest.raises(PlannerTimeout):
                plain.hello()
    finally:
        srv.stop()
    assert zmq.has("curve")


def test_bind_conflicts_and_bad_curve_keys_are_refused(server, engine, spec, tmp_path):
    from planner_runtime.server import CurveConfig

    with pytest.raises(ServerConfigError, match="cannot bind"):
        PlannerServer(engine, spec, bind=server.endpoint)
    with pytest.raises(ServerConfigError, match="certificate"):
        PlannerServer(engine, spec, bind="tcp://127.0.0.1:0", curve=CurveConfig(str(tmp_path / "nope.key_secret")))
    with PlannerClient(server.endpoint, timeout=5.0) as c:
        assert c.hello()["type"] == "metadata"  # the running server is unharmed


def test_a_flood_of_garbage_does_not_stop_the_service(server, client, spec, make_obs, wait):
    client.hello()
    n = 2000
    sent = sum(client.send_raw(b"\xc1garbage") for _ in range(n))
    assert wait(lambda: server.error_counts.get(P.E_BAD_FRAME, 0) == sent, timeout=30)
    h = client.ping(timeout=10)  # error frames that arrive meanwhile are kept, not mistaken for the reply
    assert h["status"] == "ok" and h["error_counts"]["bad_frame"] == sent
    x, c = make_obs()
    seq = client.send_observation(x, c)
    for _ in range(n + 1):  # the error frames received so far are raised first, then the chunk
        try:
            ch = client.wait_chunk(seq, timeout=10)
            break
        except ServerError as exc:
            assert exc.code == P.E_BAD_FRAME
    assert ch.obs_seq == seq


def test_requests_racing_the_sampler_send_are_never_lost(engine, spec, endpoint, make_obs):
    # The sampler thread sends chunks itself while the socket thread waits on the socket's
    # edge-triggered descriptor. A request that arrives during that send must still wake the
    # socket thread: with no poll timeout to fall back on and no client resends, a lost
    # wake-up would leave the ping unanswered and time out.
    srv = PlannerServer(engine, spec, bind=endpoint, seed=0, poll_ms=600_000).start()
    a = PlannerClient(endpoint, timeout=5.0, resend_interval=60.0)
    b = PlannerClient(endpoint, timeout=5.0, resend_interval=60.0)
    try:
        a.hello()
        b.hello()
        x, c = make_obs()
        for i in range(150):
            seq = a.send_observation(x, c, stamp=float(i))
            assert b.ping(timeout=5.0)["status"] == "ok"  # sent while that plan runs or goes out
            assert a.wait_chunk(seq, timeout=5.0).obs_seq == seq
        h = b.ping()
        assert h["plans"] == 150 and h["counters"]["send_dropped"] == 0
        assert h["counters"]["rx"] == 2 + 150 + 151  # hellos, observations, pings
    finally:
        a.close()
        b.close()
        srv.stop()


def test_committed_actions_are_held_as_the_plans_first_rows(client, spec, make_obs):
    """Real-time chunking through the real service: an observation's committed actions come
    back exactly as the chunk's first rows, and the chunk says how many."""
    client.hello()
    assert client.hello()["inpaints"] is True
    x, c = make_obs()
    committed = np.random.default_rng(3).normal(size=(2, spec.A)).astype(np.float32)
    seq = client.send_observation(x, c, stamp=10.0, committed=committed)
    ch = client.wait_chunk(seq)
    assert ch.prefix == 2
    np.testing.assert_array_equal(ch.actions[:2], committed)
    seq = client.send_observation(x, c, stamp=10.0 + 4 * spec.dt)
    ch2 = client.wait_chunk(seq)
    assert ch2.prefix == 0 and not np.array_equal(ch2.actions[:2], committed)


@pytest.mark.parametrize("rows,code", [
    (np.full((2, 3), np.nan, np.float32), P.E_NOT_FINITE),
    ("wide", P.E_BAD_SHAPE),
    ("long", P.E_BAD_SHAPE),
])
def test_bad_committed_actions_get_an_error_and_the_service_goes_on(client, spec, make_obs, rows, code):
    client.hello()
    x, c = make_obs()
    if isinstance(rows, str):
        rows = np.zeros((2, spec.A + 1) if rows == "wide" else (spec.H + 1, spec.A), np.float32)
    else:
        rows = np.full((2, spec.A), np.nan, np.float32)
    client.send_observation(x, c, stamp=1.0, committed=rows)
    with pytest.raises(ServerError) as ei:
        client.poll_chunk(5.0)
    assert ei.value.code == code
    seq = client.send_observation(x, c, stamp=2.0)
    assert client.wait_chunk(seq).obs_seq == seq


def test_an_engine_without_prefix_inputs_refuses_committed_actions(tmp_path, endpoint):
    """An engine exported before real-time chunking (the contract's first input list): the
    service says so in its hello and refuses committed actions with what to do."""
    from planner_runtime.async_planner import PlannerSpec
    from planner_runtime.backends import load_engine

    from .conftest import build_probe

    eng = load_engine(build_probe(tmp_path / "v1.onnx"))
    assert not eng.inpaints
    sp = PlannerSpec.from_manifest(eng.manifest)
    srv = PlannerServer(eng, sp, bind=endpoint).start()
    try:
        with PlannerClient(endpoint, timeout=5.0) as cl:
            assert cl.hello()["inpaints"] is False
            x = np.zeros(sp.S, np.float32)
            cl.send_observation(x, np.zeros(sp.C, np.float32), stamp=1.0,
                                committed=np.zeros((1, sp.A), np.float32))
            with pytest.raises(ServerError, match="re-export") as ei:
                cl.poll_chunk(5.0)
            assert ei.value.code == P.E_BAD_FIELD
            seq = cl.send_observation(x, np.zeros(sp.C, np.float32), stamp=2.0)
            assert cl.wait_chunk(seq).prefix == 0
    finally:
        srv.stop()

"""docker/healthcheck.py against real ZeroMQ sockets on loopback.

The responder is a plain ROUTER speaking the project's protocol module (what `serve` binds);
it lets the tests choose the reply (healthy, degraded, error, silent).
"""

from __future__ import annotations

import threading

import pytest

from .conftest import DOCKER, load_script

zmq = pytest.importorskip("zmq")
from planner_runtime import protocol as P  # noqa: E402

hc = load_script(DOCKER / "healthcheck.py", "planner_runtime_healthcheck")


class Responder:
    """A ROUTER that answers each request with ``reply(msg)`` (None: stay silent)."""

    def __init__(self, endpoint: str, reply):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.reply = reply
        self.seen: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, payload = self.sock.recv_multipart()
            msg = P.decode(payload)
            self.seen.append(msg)
            out = self.reply(msg)
            if out is not None:
                if "req" in msg:
                    out = {**out, "req": msg["req"]}
                self.sock.send_multipart([ident, P.encode(out)])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def responder(tcp_endpoint):
    made = []

    def make(reply):
        r = Responder(tcp_endpoint, reply)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def health(status="ok"):
    return {"type": "health", "status": status, "uptime_s": 12.0, "backend": "ort-cpu", "plans": 7,
            "engine_errors": 0}


def test_healthy_service_exits_0_and_says_so(responder, tcp_endpoint, capsys):
    r = responder(lambda m: health())
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {tcp_endpoint} up 12 s, backend ort-cpu, plans 7")
    assert [m["type"] for m in r.seen][:1] == ["ping"]


def test_endpoint_from_environment(responder, tcp_endpoint, monkeypatch, capsys):
    responder(lambda m: health())
    monkeypatch.setenv("PLANNER_ENDPOINT", tcp_endpoint)
    assert hc.main(["--timeout", "10"]) == 0


def test_degraded_status_error_reply_and_silence_are_unhealthy(responder, tcp_endpoint, capsys):
    r = responder(lambda m: health("degraded"))
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "10"]) == 1
    assert "degraded" in capsys.readouterr().out
    r.reply = lambda m: P.error_msg(P.E_ENGINE, "engine gone")
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "10"]) == 1
    assert "engine gone" in capsys.readouterr().out
    r.reply = lambda m: None
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "0.3"]) == 1
    assert "no reply" in capsys.readouterr().out


def test_no_server_is_unhealthy_and_bad_timeout_is_refused(tcp_endpoint, capsys):
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "0.2"]) == 1
    assert hc.main(["--endpoint", tcp_endpoint, "--timeout", "0"]) == 2

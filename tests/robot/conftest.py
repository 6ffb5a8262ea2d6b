"""Fixtures for the controller tests: a Go2-sized engine, a planner service process,
the DDS stand-in robot process, isolated DDS domains on the loopback interface.

The engine is a small fused-contract ONNX graph with the Go2's dimensions (S=30, A=12,
C=3) and the Go2 action semantics in its manifest, run by the real service through ONNX
Runtime. Its weights are tiny, so its actions stay near 0 (the default standing pose):
it exercises the planning path (observations out, stamped chunks in, targets applied),
not walking. (A trained engine is a later issue's work.)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from planner_runtime.server import free_tcp_port
from robot.probe_engine import build_probe_engine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def go2_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe_engine(tmp_path_factory.mktemp("robot_engine") / "go2_toy.onnx")


free_port = free_tcp_port


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_service(engine: Path, endpoint: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "planner_runtime.cli", "serve", "--engine", str(engine),
           "--bind", endpoint, "--threads", "1", "--log-level", "warning", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=child_env())


def wait_service(endpoint: str, timeout: float = 30.0) -> dict:
    from planner_runtime.client import PlannerClient

    with PlannerClient(endpoint, timeout=timeout) as c:
        return c.hello(timeout)


@pytest.fixture(scope="session")
def dds_domain() -> int:
    """A random DDS domain per test session, so concurrent runs never see each other. (One
    per session: unitree_sdk2py binds a process to one domain, and tests that publish from
    the pytest process share it.)"""
    return random.randint(100, 230)


class StandIn:
    """The DDS stand-in robot (`python -m sim.dds_robot`) as a child process."""

    def __init__(self, domain: int, stats: Path, *extra: str) -> None:
        self.stats_path = stats
        cmd = [sys.executable, "-m", "sim.dds_robot", "--domain-id", str(domain), "--iface", "lo",
               "--dds-stats", str(stats), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env())
        line = self.proc.stdout.readline()  # the stand-in prints one "ready" line
        if '"ready"' not in line:
            self.proc.kill()
            raise RuntimeError(f"stand-in robot did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self, timeout: float = 20.0) -> dict:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        deadline = time.monotonic() + 5
        while not self.stats_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.loads(self.stats_path.read_text())


@pytest.fixture
def stand_in_factory(tmp_path: Path, dds_domain: int) -> Iterator:
    made: list[StandIn] = []

    def make(*extra: str) -> StandIn:
        s = StandIn(dds_domain, tmp_path / f"standin{len(made)}.json", *extra)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)

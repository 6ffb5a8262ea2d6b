"""Fixtures for the service tests: a small real engine, servers and clients on ephemeral ports.

The engine is built once per session. When the project's exporter (``export.onnx_export``)
is importable, it exports a real sampler from a tiny randomly initialised model; otherwise
it is the probe engine of ``planner_runtime.probe_engine`` (a hand-built contract graph).
Either way the tests run it through the project's ONNX Runtime backend (``load_engine``):
the sampler is never faked.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from planner_runtime.async_planner import PlannerSpec
from planner_runtime.backends import load_engine
from planner_runtime.client import PlannerClient
from planner_runtime.probe_engine import build_probe_engine, probe_manifest
from planner_runtime.server import PlannerServer, free_tcp_port

# Tiny dimensions: fast on 2 shared cores, but every contract input and output is real.
S, A, C, H, B, K, N_STEPS = 4, 2, 3, 8, 1, 10, 5
DT, CHUNK = 0.02, 4


def build_probe(path: Path, graph: str = "fused") -> Path:
    """The probe engine (``planner_runtime.probe_engine``, no prefix inputs) with the tiny dims."""
    manifest = probe_manifest(S, A, C, H, B=B, K=K, n_steps=N_STEPS, dt=DT, chunk=CHUNK, cfg_w=2.0,
                              note="built by tests/runtime/conftest.py")
    return build_probe_engine(path, manifest, graph=graph, seed=0 if graph == "fused" else 1)


def export_tiny_mpdiffuser(path: Path, graph: str = "fused") -> Path:
    """The project's exporter on a tiny, randomly initialised MPDiffuser (planner + dynamics
    temporal U-Nets, CFG, alternating steps): a real sampler graph, seconds to export."""
    import torch

    from export.data import Normalizer, Normalizers
    from export.models.unet import TemporalUnet
    from export.onnx_export import export_engine, generic_meta
    from export.sampling.mpdiffuser import MPDiffuserSampler

    torch.set_num_threads(1)
    torch.manual_seed(0)
    D = S + A
    rng = np.random.default_rng(0)
    norms = Normalizers(
        # minmax: the sampler clips x0_hat to [-1, 1], so random weights stay bounded
        Normalizer("minmax", rng.standard_normal(D).astype(np.float32) * 0.1,
                   (0.5 + rng.random(D)).astype(np.float32)),
        Normalizer("std", np.zeros(C, np.float32), np.ones(C, np.float32)))
    net = dict(dim=8, mults=(1, 2), emb_dim=8)
    sampler = MPDiffuserSampler(TemporalUnet(H, D, D, S, C, **net), TemporalUnet(H, D, S, S, C, **net),
                                norms, S, A, C, H, K)
    meta = generic_meta(S, A, C, warm_level=N_STEPS, chunk_size=CHUNK, control_dt=DT,
                        temperature=1.0, cfg_w=2.0,
                        provenance={"note": "tiny random MPDiffuser built by tests/runtime"})
    export_engine(sampler, path, graph=graph, n_steps=N_STEPS if graph == "fused" else None, meta=meta)
    return path


def build_tiny_engine(path: Path) -> Path:
    """Prefer the project's exporter; fall back to the probe engine only when
    the offline side (torch, export/) is not installed."""
    try:
        import export.onnx_export  # noqa: F401
    except ImportError:
        return build_probe(path)
    return export_tiny_mpdiffuser(path)


free_port = free_tcp_port


@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "tiny.onnx"
    return build_tiny_engine(out)


@pytest.fixture(scope="session")
def step_engine_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "tiny_step.onnx"
    try:
        import export.onnx_export  # noqa: F401
    except ImportError:
        return build_probe(out, graph="step")
    return export_tiny_mpdiffuser(out, graph="step")


@pytest.fixture(scope="session")
def engine(engine_path: Path):
    # One ONNX Runtime session for the whole run (run() is thread-safe; loading costs ~1 s).
    eng = load_engine(engine_path, provider="cpu", threads=1)
    yield eng
    eng.close()


@pytest.fixture
def spec(engine) -> PlannerSpec:
    return PlannerSpec.from_manifest(engine.manifest)


@pytest.fixture
def server(engine, spec, endpoint) -> Iterator[PlannerServer]:
    srv = PlannerServer(engine, spec, bind=endpoint, seed=0).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server) -> Iterator[PlannerClient]:
    c = PlannerClient(server.endpoint, timeout=5.0)
    yield c
    c.close()


def obs_arrays(spec: PlannerSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(spec.S).astype(np.float32), rng.standard_normal(spec.C).astype(np.float32)


def serve_cmd(engine_path: Path, endpoint: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "planner_runtime.cli", "serve", "--engine", str(engine_path),
            "--bind", endpoint, "--threads", "1", *extra]


@pytest.fixture
def serve_proc(engine_path, endpoint) -> Iterator[tuple[subprocess.Popen, str]]:
    proc = subprocess.Popen(serve_cmd(engine_path, endpoint), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield proc, endpoint
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


@pytest.fixture
def start_serve(engine_path, endpoint):
    """Start ``serve`` subprocesses on ``endpoint`` with extra arguments; any still running
    at teardown are killed."""
    procs: list[subprocess.Popen] = []

    def start(*extra: str) -> subprocess.Popen:
        procs.append(subprocess.Popen(serve_cmd(engine_path, endpoint, *extra), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


class RecordingEngine:
    """Wraps a REAL engine: records each call's inputs and can hold a call until released
    (to make "the sampler is busy" deterministic). The plan itself comes from the engine."""

    def __init__(self, inner):
        import threading

        self.inner = inner
        self.manifest = inner.manifest
        self.backend = inner.backend
        self.calls: list[dict] = []
        self.entered = threading.Event()  # set when a call starts
        self.gate = threading.Event()  # plan() waits on it while it is cleared
        self.gate.set()
        self.fail_next = False  # make the next call fail like a broken engine would

    def plan(self, x0, cond, prev_plan, noise, levels, cfg_w=None):
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("test gate was never opened")
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected engine failure")
        out = self.inner.plan(x0, cond, prev_plan, noise, levels, cfg_w)
        self.calls.append({"x0": x0.copy(), "cond": cond.copy(), "prev_plan": prev_plan.copy(),
                           "noise": noise.copy(), "levels": np.asarray(levels).copy(),
                           "cfg_w": cfg_w, "plan": out.plan.copy(), "best": out.best})
        return out

    def close(self):
        self.inner.close()


@pytest.fixture
def recording(engine) -> RecordingEngine:
    return RecordingEngine(engine)


@pytest.fixture
def rec_server(recording, spec, endpoint) -> Iterator[PlannerServer]:
    srv = PlannerServer(recording, spec, bind=endpoint, seed=0).start()
    yield srv
    srv.stop()


@pytest.fixture
def rec_client(rec_server) -> Iterator[PlannerClient]:
    c = PlannerClient(rec_server.endpoint, timeout=5.0)
    yield c
    c.close()


def wait_until(pred, timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll a condition on a deadline (for server-side counters only)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


@pytest.fixture
def wait():
    return wait_until


@pytest.fixture
def make_obs(spec):
    return lambda seed=0: obs_arrays(spec, seed)


@pytest.fixture
def serve_argv(engine_path):
    return lambda endpoint, *extra: serve_cmd(engine_path, endpoint, *extra)


@pytest.fixture
def free_endpoint_port() -> int:
    return free_port()

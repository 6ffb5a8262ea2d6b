"""Fixtures for the service tests: a small real engine, servers and clients on ephemeral ports.

The engine is built once per session. When the project's exporter (``export.onnx_export``)
is importable, it exports a real sampler from a tiny randomly initialised model; otherwise a
tiny ONNX graph that follows the fused contract is built with ``onnx.helper``. Either way
the tests run it through the project's ONNX Runtime backend (``load_engine``): the sampler
is never faked.
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
from planner_runtime.server import PlannerServer, free_tcp_port

# Tiny dimensions: fast on 2 shared cores, but every contract input and output is real.
S, A, C, H, B, K, N_STEPS = 4, 2, 3, 8, 1, 10, 5
DT, CHUNK = 0.02, 4


def tiny_manifest() -> dict:
    from planner_runtime import schedule

    return {
        "format": "planner-runtime-engine", "format_version": 1,
        "method": {"name": "toy-fused", "knobs": {}},
        "graph": {"kind": "fused", "n_steps": N_STEPS,
                  "inputs": ["x0", "cond", "prev_plan", "noise", "levels", "cfg_w"],
                  "outputs": ["plan", "score", "best"]},
        "dims": {"S": S, "A": A, "C": C, "H": H, "B": B},
        "diffusion": {"K": K, "schedule": "cosine", "warm_level": N_STEPS,
                      "cold_levels": schedule.ddim_levels(K, N_STEPS).tolist(),
                      "warm_levels": schedule.warm_levels(N_STEPS).tolist(),
                      "cfg_w": 2.0, "temperature": 1.0, "clip": None},
        "normalizer": {"kind": "std",
                       "traj": {"kind": "std", "shift": [0.0] * (S + A), "scale": [1.0] * (S + A)},
                       "cond": {"kind": "std", "shift": [0.0] * C, "scale": [1.0] * C}},
        "observation": {"state_names": [f"s{i}" for i in range(S)],
                        "condition_names": [f"c{i}" for i in range(C)],
                        "action_names": [f"a{i}" for i in range(A)]},
        "action": {"joint_names": [f"j{i}" for i in range(A)], "default_joint_pos": [0.0] * A,
                   "scale": 0.25},
        "control": {"dt": DT, "chunk_size": CHUNK},
        "robot": {"name": "toy", "profile": None},
        "provenance": {"note": "built by tests/runtime/conftest.py"},
        "checksums": {},
    }


def build_contract_graph(path: Path) -> Path:
    """A small fused-contract ONNX graph: plan = 0.5 prev_plan + 0.1 cfg_w noise +
    (x0 Wx + cond Wc + level/K) broadcast over H; score = mean(plan); best = argmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from planner_runtime.engine_file import attach_manifest

    rng = np.random.default_rng(0)
    D = S + A
    f = TensorProto.FLOAT
    inits = [numpy_helper.from_array(rng.standard_normal((S, D)).astype(np.float32) * 0.3, "Wx"),
             numpy_helper.from_array(rng.standard_normal((C, D)).astype(np.float32) * 0.3, "Wc"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(0.1, np.float32), "tenth"),
             numpy_helper.from_array(np.array(1.0 / K, np.float32), "invK"),
             numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12")]
    nodes = [
        helper.make_node("MatMul", ["x0", "Wx"], ["bx"]),
        helper.make_node("MatMul", ["cond", "Wc"], ["bc"]),
        helper.make_node("Add", ["bx", "bc"], ["b0"]),
        helper.make_node("ReduceMax", ["levels"], ["lmax"], keepdims=0),
        helper.make_node("Cast", ["lmax"], ["lf"], to=f),
        helper.make_node("Mul", ["lf", "invK"], ["lk"]),
        helper.make_node("Add", ["b0", "lk"], ["b1"]),
        helper.make_node("Unsqueeze", ["b1", "one_axis"], ["b2"]),
        helper.make_node("Mul", ["prev_plan", "half"], ["pp"]),
        helper.make_node("Mul", ["noise", "tenth"], ["n1"]),
        helper.make_node("Mul", ["n1", "cfg_w"], ["n2"]),
        helper.make_node("Add", ["pp", "n2"], ["p1"]),
        helper.make_node("Add", ["p1", "b2"], ["plan"]),
        helper.make_node("ReduceMean", ["plan", "axes12"], ["score"], keepdims=0),
        helper.make_node("ArgMax", ["score"], ["best"], axis=0, keepdims=1),
    ]
    io = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    graph = helper.make_graph(
        nodes, "toy_fused",
        [io("x0", f, [B, S]), io("cond", f, [B, C]), io("prev_plan", f, [B, H, D]),
         io("noise", f, [B, H, D]), io("levels", TensorProto.INT64, [N_STEPS + 1]),
         io("cfg_w", f, [1])],
        [io("plan", f, [B, H, D]), io("score", f, [B]), io("best", TensorProto.INT64, [1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    attach_manifest(model, tiny_manifest())
    path.write_bytes(model.SerializeToString())
    return path


def build_step_graph(path: Path) -> Path:
    """A small step-contract ONNX graph: on start the iterate is prev_plan + noise, then
    tau_next = 0.9 tau + x0 Wx + next_level / K; plan = tau_next (the loop is the runtime's)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from planner_runtime.engine_file import attach_manifest

    rng = np.random.default_rng(1)
    D = S + A
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [numpy_helper.from_array(rng.standard_normal((S, D)).astype(np.float32) * 0.3, "Wx"),
             numpy_helper.from_array(np.array(0.9, np.float32), "decay"),
             numpy_helper.from_array(np.array(1.0, np.float32), "onef"),
             numpy_helper.from_array(np.array(1.0 / K, np.float32), "invK"),
             numpy_helper.from_array(np.array([1], np.int64), "one_axis")]
    nodes = [
        helper.make_node("Cast", ["start"], ["sf"], to=f),
        helper.make_node("Add", ["prev_plan", "noise"], ["fresh"]),
        helper.make_node("Mul", ["fresh", "sf"], ["a"]),
        helper.make_node("Sub", ["onef", "sf"], ["nsf"]),
        helper.make_node("Mul", ["tau", "nsf"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["t_in"]),
        helper.make_node("Mul", ["t_in", "decay"], ["t1"]),
        helper.make_node("MatMul", ["x0", "Wx"], ["bx"]),
        helper.make_node("Unsqueeze", ["bx", "one_axis"], ["bx3"]),
        helper.make_node("Cast", ["next_level"], ["nl"], to=f),
        helper.make_node("Mul", ["nl", "invK"], ["nlk"]),
        helper.make_node("Add", ["t1", "bx3"], ["t2"]),
        helper.make_node("Add", ["t2", "nlk"], ["tau_next"]),
        helper.make_node("Mul", ["cfg_w", "onef"], ["w1"]),
        helper.make_node("Sub", ["w1", "cfg_w"], ["zero_w"]),  # keeps cfg_w a used input
        helper.make_node("Add", ["tau_next", "zero_w"], ["p0"]),
        helper.make_node("ReduceSum", ["cond", "one_axis"], ["csum"], keepdims=1),
        helper.make_node("Mul", ["csum", "invK"], ["c1"]),
        helper.make_node("Sub", ["c1", "c1"], ["c0"]),
        helper.make_node("Unsqueeze", ["c0", "one_axis"], ["c03"]),
        helper.make_node("Add", ["p0", "c03"], ["plan"]),
    ]
    io = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    graph = helper.make_graph(
        nodes, "toy_step",
        [io("x0", f, [B, S]), io("cond", f, [B, C]), io("prev_plan", f, [B, H, D]),
         io("noise", f, [B, H, D]), io("tau", f, [B, H, D]), io("level", i64, [1]),
         io("next_level", i64, [1]), io("start", i64, [1]), io("cfg_w", f, [1])],
        [io("tau_next", f, [B, H, D]), io("plan", f, [B, H, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    m = tiny_manifest()
    m["method"]["name"] = "toy-step"
    m["graph"] = {"kind": "step", "n_steps": 1,
                  "inputs": ["x0", "cond", "prev_plan", "noise", "tau", "level", "next_level",
                             "start", "cfg_w"], "outputs": ["tau_next", "plan"]}
    attach_manifest(model, m)
    path.write_bytes(model.SerializeToString())
    return path


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
    """Prefer the project's exporter; fall back to the hand-built contract graph only when
    the offline side (torch, export/) is not installed."""
    try:
        import export.onnx_export  # noqa: F401
    except ImportError:
        return build_contract_graph(path)
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
        return build_step_graph(out)
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

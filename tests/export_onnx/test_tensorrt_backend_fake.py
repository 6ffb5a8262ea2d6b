"""The TensorRT backend's bookkeeping, with TensorRT and CUDA FAKED (neither can run here).

The fake ``tensorrt`` module "deserializes" the engine bytes as ONNX and executes them with
ONNX Runtime, reading inputs from and writing outputs to the raw addresses the backend set
with ``set_tensor_address``; the fake CUDA runtime's device buffers are host numpy arrays and
its copies are memmove. So this checks what is ours in ``backends/tensorrt.py`` (buffer
allocation, host<->device copies, the step pass's ping-pong of the iterate, output
read-back, the .plan container and version check) under ``Engine``'s shared plan and step
loop, NOT TensorRT itself: that is
test_tensorrt.py's job on a GPU machine.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest

from planner_runtime.backends import load_engine
from planner_runtime.engine import EngineError
from planner_runtime.engine_file import pack_plan, read_manifest


class FakeCuda:
    def __init__(self) -> None:
        self.bufs: dict[int, np.ndarray] = {}

    def set_device(self, dev: int) -> None:
        pass

    def malloc(self, nbytes: int) -> int:
        b = np.zeros(max(int(nbytes), 1), np.uint8)
        self.bufs[b.ctypes.data] = b
        return b.ctypes.data

    def free(self, ptr: int) -> None:
        self.bufs.pop(ptr, None)

    def stream(self) -> int:
        return 1

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        ctypes.memmove(dst, src, nbytes)

    def sync(self, stream: int) -> None:
        pass


def _read(ptr: int, shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape).copy()


class FakeContext:
    def __init__(self, engine) -> None:
        self.engine, self.addr = engine, {}

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        e = self.engine
        feeds = {n: _read(self.addr[n], e.shapes[n], e.dtypes[n]) for n in e.inputs}
        for n, v in zip(e.outputs, e.sess.run(e.outputs, feeds), strict=True):
            v = np.ascontiguousarray(v, dtype=e.dtypes[n])
            ctypes.memmove(self.addr[n], v.ctypes.data, v.nbytes)
        return True


class FakeEngine:
    _T = {"tensor(float)": np.float32, "tensor(int64)": np.int64}

    def __init__(self, blob: bytes) -> None:
        self.sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        ios = list(self.sess.get_inputs()) + list(self.sess.get_outputs())
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.names = [i.name for i in ios]
        self.shapes = {i.name: tuple(i.shape) for i in ios}
        self.dtypes = {i.name: self._T[i.type] for i in ios}
        self.num_io_tensors = len(ios)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_shape(self, name: str):
        return self.shapes[name]

    def get_tensor_dtype(self, name: str):
        return self.dtypes[name]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


def _fake_trt() -> types.ModuleType:
    m = types.ModuleType("tensorrt")
    m.__version__ = "fake-10"
    m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    m.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                     "deserialize_cuda_engine": lambda self, blob: FakeEngine(blob)})
    m.nptype = lambda dt: dt
    return m


@pytest.fixture
def fake_trt(monkeypatch):
    import planner_runtime.backends.tensorrt as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt())
    monkeypatch.setattr(trt_backend, "CudaRuntime", FakeCuda)


def _plan_file(onnx_path, tmp_path, version: str = "fake-10"):
    m = read_manifest(onnx_path).to_dict()
    m["tensorrt"] = {"version": version, "fp16": False, "device": "fake"}
    p = tmp_path / (onnx_path.stem + ".plan")
    p.write_bytes(pack_plan(m, onnx_path.read_bytes()))
    return p


@pytest.mark.parametrize("graph,n", [("fused", 1), ("step", 1), ("fused", 3)])
def test_trt_backend_matches_ort(engines, plan_inputs_fn, fake_trt, tmp_path, graph, n):
    path, _ = engines.get("mpdiffuser" if n == 1 else "planner", graph, n_samples=n)
    trt_eng = load_engine(_plan_file(path, tmp_path))
    assert trt_eng.backend == "tensorrt"
    ort_eng = load_engine(path, threads=1)
    for cold in (False, True):
        inp = plan_inputs_fn(n, cold=cold)
        a, b = trt_eng.plan(**inp, cfg_w=1.5), ort_eng.plan(**inp, cfg_w=1.5)
        np.testing.assert_array_equal(a.plan, b.plan)
        np.testing.assert_array_equal(a.score, b.score)
        assert a.best == b.best
        assert a.timings.keys() == b.timings.keys()  # one step loop: step{i}_ms on both
    trt_eng.close()


def test_trt_backend_refuses_other_tensorrt_version(engines, fake_trt, tmp_path):
    path, _ = engines.get("planner", "step")
    with pytest.raises(EngineError, match="rebuild it here"):
        load_engine(_plan_file(path, tmp_path, version="9.0"))

"""TensorRT backend: runs a planner-runtime ``.plan`` with the tensorrt Python API.

No torch and no pycuda: device buffers, copies and the stream come from the CUDA runtime
library (``libcudart``) through ctypes, which JetPack and every CUDA install ship. The
TensorRT 10 name-based tensor API is used (``set_tensor_address`` + ``execute_async_v3``).
Input checks, level defaults and the loop over a step graph's levels live in ``Engine``
(``engine.py``); this module implements its engine calls: each input goes through a host
staging buffer to its own device buffer, and a step pass ping-pongs the iterate
between two device buffers; no update math is done on the host. The calls are enqueued
on one stream, so a step's ``step{i}_ms`` is its enqueue time; ``infer_ms`` ends after the
plan is read back and the stream synchronized.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.engine import Engine, EngineError
from planner_runtime.engine_file import read_plan

log = logging.getLogger(__name__)

_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind
_TRT_HINT = (
    "the TensorRT Python package is not installed. On a Jetson it comes with JetPack "
    "(apt install python3-libnvinfer); on x86 install NVIDIA's wheel "
    "(pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12). "
    "Or serve the .onnx engine with ONNX Runtime instead."
)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        from planner_runtime.backends import BackendUnavailable

        raise BackendUnavailable(_TRT_HINT) from exc
    return trt


class CudaRuntime:
    """The few libcudart calls the backend needs, via ctypes (no cuda-python, no torch)."""

    _NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")

    def __init__(self) -> None:
        lib = None
        found = ctypes.util.find_library("cudart")
        for name in ((found,) if found else ()) + self._NAMES:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            from planner_runtime.backends import BackendUnavailable

            raise BackendUnavailable("libcudart (the CUDA runtime) was not found; install CUDA or JetPack")
        self.lib = lib
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_int, ctypes.c_void_p]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        lib.cudaSetDevice.argtypes = [ctypes.c_int]

    def check(self, code: int, what: str) -> None:
        if code != 0:
            msg = self.lib.cudaGetErrorString(code).decode()
            raise EngineError(f"CUDA error in {what}: {msg} ({code})")

    def set_device(self, dev: int) -> None:
        self.check(self.lib.cudaSetDevice(dev), "cudaSetDevice")

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), "cudaMalloc")
        return int(p.value or 0)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


class TensorRTEngine(Engine):
    """A planner-runtime ``.plan`` (container + serialized TensorRT engine)."""

    def __init__(self, path: str | Path, profile: Mapping[str, Any] | None = None,
                 device: int = 0) -> None:
        self.path = Path(path)
        manifest, blob = read_plan(self.path)  # verifies container + checksum before any GPU work
        self._adopt_manifest(manifest, profile)
        trt = import_tensorrt()
        built = (manifest.tensorrt or {}).get("version")
        if built and built != trt.__version__:
            raise EngineError(
                f"{self.path}: built with TensorRT {built}, this machine has {trt.__version__}; "
                "engines are not portable: rebuild it here with `planner-runtime build-engine`"
            )
        self.cuda = CudaRuntime()
        self.cuda.set_device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EngineError(
                f"{self.path}: TensorRT could not deserialize the engine (built for another GPU "
                "or TensorRT version?): rebuild it on this device with `planner-runtime build-engine`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self._bufs: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        want = set(manifest.graph.inputs) | set(manifest.graph.outputs)
        if set(names) != want:
            raise EngineError(f"{self.path}: engine tensors {sorted(names)} != manifest {sorted(want)}")
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self._host[name] = np.zeros(shape, dtype)
            self._bufs[name] = self.cuda.malloc(self._host[name].nbytes)
            self.context.set_tensor_address(name, self._bufs[name])
        if self.kind == "step":  # second iterate buffer for the ping-pong
            self._tau_b = self.cuda.malloc(self._host["tau"].nbytes)
        self.backend = "tensorrt"
        self.provider = "tensorrt"

    def _put(self, name: str, value: np.ndarray) -> None:
        """Stage a checked input in its host buffer and enqueue its copy to the device."""
        h = self._host[name]
        h[...] = value.reshape(h.shape)
        self.cuda.copy(self._bufs[name], h.ctypes.data, h.nbytes, _H2D, self.stream)

    def _get(self, name: str, ptr: int | None = None) -> np.ndarray:
        h = self._host[name]
        self.cuda.copy(h.ctypes.data, ptr or self._bufs[name], h.nbytes, _D2H, self.stream)
        return h

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT execute_async_v3 failed")

    # ------------------------------------------------------------ engine calls
    def _run_fused(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        for name, v in feeds.items():
            self._put(name, v)
        self._execute()
        plan = self._get("plan").copy()
        score = self._get("score").copy()
        best = self._get("best").reshape(-1)
        self.cuda.sync(self.stream)
        return plan, score, best

    def _begin_steps(self, feeds: dict[str, np.ndarray], tau0: np.ndarray) -> Any:
        for name, v in feeds.items():  # constant over the pass: copied to the device once
            self._put(name, v)
        self._put("tau", tau0)
        return (self._bufs["tau"], self._tau_b)

    def _run_step(self, run: Any, i: int, level: np.ndarray, next_level: np.ndarray,
                  start: np.ndarray) -> None:
        self._put("level", level)
        self._put("next_level", next_level)
        self._put("start", start)
        # the new iterate is the next call's input, already on the device
        self.context.set_tensor_address("tau", run[i % 2])
        self.context.set_tensor_address("tau_next", run[(i + 1) % 2])
        self._execute()

    def _end_steps(self, run: Any) -> np.ndarray:
        plan = self._get("plan").copy()
        self.cuda.sync(self.stream)
        self.context.set_tensor_address("tau", self._bufs["tau"])
        self.context.set_tensor_address("tau_next", self._bufs["tau_next"])
        return plan

    def close(self) -> None:
        for p in list(self._bufs.values()) + ([self._tau_b] if self.kind == "step" else []):
            self.cuda.free(p)
        self._bufs.clear()
        self.context = None
        self.engine = None

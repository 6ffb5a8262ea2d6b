"""ONNX Runtime backend: the engine calls of ``Engine`` for an ``.onnx`` engine.

Execution provider: TensorRT EP > CUDA EP > CPU, whichever this machine's onnxruntime
build offers (the GPU build is the ``onnxruntime-gpu`` wheel, which replaces the CPU one),
unless ``provider`` asks for one. Input checks, level defaults and the loop over a step
graph's levels live in ``Engine`` (``engine.py``); this module loads the session, checks
the graph's I/O against the manifest and runs the graph calls. On a GPU provider a step
pass uses I/O binding so the iterate ``tau`` stays on the device between calls and the
constant inputs are copied once.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.engine import Engine, EngineError
from planner_runtime.engine_file import load_onnx

log = logging.getLogger(__name__)

_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        from planner_runtime.backends import BackendUnavailable

        raise BackendUnavailable(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu"
        ) from exc
    return onnxruntime


def choose_providers(provider: str | None, available: list[str]) -> list[str]:
    """The provider list to hand to ONNX Runtime: the chosen one first, CPU as fallback."""
    if provider is None:
        chosen = next(p for p in PREFERENCE if p in available or p == "CPUExecutionProvider")
    else:
        chosen = _ALIASES.get(provider.lower(), provider)
        if chosen not in available:
            from planner_runtime.backends import BackendUnavailable

            hint = ""
            if chosen in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                hint = (" (install onnxruntime-gpu in place of onnxruntime: pip uninstall -y "
                        "onnxruntime && pip install onnxruntime-gpu; needs CUDA 13 / cuDNN 9)")
            raise BackendUnavailable(
                f"execution provider {chosen!r} is not available here; available: {available}{hint}"
            )
    out = [chosen]
    if chosen == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        out.append("CUDAExecutionProvider")  # ops TensorRT rejects fall back to CUDA, not CPU
    if chosen != "CPUExecutionProvider":
        out.append("CPUExecutionProvider")
    return out


def _provider_options(name: str, cache_dir: Path, trt_fp16: bool) -> dict[str, Any]:
    if name == "TensorrtExecutionProvider":
        # Engines are cached next to the model: building takes seconds to minutes on a Jetson.
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True, "trt_fp16_enable": bool(trt_fp16)}
    return {}


class OrtEngine(Engine):
    """An ``.onnx`` engine on ONNX Runtime."""

    def __init__(self, path: str | Path, provider: str | None = None, threads: int | None = None,
                 profile: Mapping[str, Any] | None = None, inter_threads: int | None = None,
                 io_binding: bool | None = None, trt_fp16: bool = False) -> None:
        ort = _ort()
        self.path = Path(path)
        model, manifest = load_onnx(self.path)
        self._adopt_manifest(manifest, profile)
        self._check_io(model)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        if inter_threads is not None:
            so.inter_op_num_threads = int(inter_threads)
        providers = choose_providers(provider, ort.get_available_providers())
        cache = self.path.with_name(self.path.stem + ".ort_trt_cache")
        opts = [_provider_options(p, cache, trt_fp16) for p in providers]
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                                providers=providers, provider_options=opts)
        except Exception as exc:
            raise EngineError(f"{self.path}: ONNX Runtime could not load the engine: {exc}") from exc
        used = self.session.get_providers()
        self.provider = used[0]
        self.backend = f"onnxruntime:{self.provider}"
        on_gpu = self.provider != "CPUExecutionProvider"
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        self._device = "cuda" if on_gpu and self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        self._out_names = [o.name for o in self.session.get_outputs()]
        log.info("loaded %s (%s graph, %s) on %s", self.path.name, self.kind,
                 manifest.method.name, self.backend)

    def _check_io(self, model: Any) -> None:
        """The graph's inputs/outputs must be exactly the contract's, with the manifest's dims."""
        B, H, D, S, C = self.B, self.H, self.D, self.S, self.C
        if self.kind == "fused":
            want = {"x0": [B, S], "cond": [B, C], "prev_plan": [B, H, D], "noise": [B, H, D],
                    "levels": [self.n_steps + 1], "cfg_w": [1],
                    "plan": [B, H, D], "score": [B], "best": [1]}
        else:
            want = {"x0": [B, S], "cond": [B, C], "prev_plan": [B, H, D], "noise": [B, H, D],
                    "tau": [B, H, D], "level": [1], "next_level": [1], "start": [1], "cfg_w": [1],
                    "tau_next": [B, H, D], "plan": [B, H, D]}
        if self.inpaints:
            want.update(prefix=[B, H, self.A], n_prefix=[1])
        got: dict[str, list[Any]] = {}
        for vi in list(model.graph.input) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            got[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        names_in = [v.name for v in model.graph.input]
        names_out = [v.name for v in model.graph.output]
        g = self.manifest.graph
        if names_in != list(g.inputs) or names_out != list(g.outputs):
            raise EngineError(
                f"{self.path}: graph I/O {names_in} -> {names_out} does not match the manifest "
                f"{list(g.inputs)} -> {list(g.outputs)}"
            )
        for name, shape in want.items():
            if got.get(name) != shape:
                raise EngineError(
                    f"{self.path}: graph {name!r} has shape {got.get(name)}, the manifest's dims "
                    f"say {shape}"
                )

    # ------------------------------------------------------------ engine calls
    def _run_fused(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan, score, best = self.session.run(self._out_names, feeds)
        return plan, score, best

    def _begin_steps(self, feeds: dict[str, np.ndarray], tau0: np.ndarray) -> Any:
        if not self.io_binding:
            return [feeds, tau0, tau0]  # constant feeds, iterate, plan
        ort = _ort()
        dev = self._device
        binding = self.session.io_binding()
        for name, arr in feeds.items():  # constant over the pass: copied to the device once
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, dev, 0))
        shape = [self.B, self.H, self.D]
        bufs = [ort.OrtValue.ortvalue_from_numpy(tau0, dev, 0),
                ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)]
        plan_v = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
        binding.bind_ortvalue_output("plan", plan_v)
        return binding, bufs, plan_v

    def _run_step(self, run: Any, i: int, level: np.ndarray, next_level: np.ndarray,
                  start: np.ndarray) -> None:
        if not self.io_binding:
            run[1], run[2] = self.session.run(self._out_names, {
                **run[0], "tau": run[1], "level": level, "next_level": next_level, "start": start})
            return
        binding, bufs, _ = run
        # Ping-pong the iterate between two device buffers: no host round trip per step.
        binding.bind_ortvalue_input("tau", bufs[i % 2])
        binding.bind_ortvalue_output("tau_next", bufs[(i + 1) % 2])
        binding.bind_cpu_input("level", level)
        binding.bind_cpu_input("next_level", next_level)
        binding.bind_cpu_input("start", start)
        self.session.run_with_iobinding(binding)

    def _end_steps(self, run: Any) -> np.ndarray:
        return run[2] if not self.io_binding else run[2].numpy()

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

"""ONNX Runtime backend: runs fused and step engines through ``Engine.plan``.

Execution provider: TensorRT EP > CUDA EP > CPU, whichever this machine's onnxruntime
build offers (the GPU build is the ``onnxruntime-gpu`` wheel, which replaces the CPU one),
unless ``provider`` asks for one. A step engine's loop over levels runs here; the update
math stays in the graph. On a GPU provider the step loop uses I/O binding so the iterate
``tau`` stays on the device between calls and the constant inputs are copied once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.engine import Engine, EngineError, PlanOutput
from planner_runtime.engine_file import load_onnx
from planner_runtime.schedule import validate_levels

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


def _as_array(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """float32, C-contiguous, exactly ``shape`` (a missing leading batch of 1 is added)."""
    a = np.asarray(value, dtype=np.float32)
    if a.shape != shape:
        if a.size == int(np.prod(shape)) and a.ndim < len(shape):
            a = a.reshape(shape)
        else:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(a)


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
        self._cfg_arrays: dict[float, np.ndarray] = {}
        log.info("loaded %s (%s graph, %s) on %s", self.path.name, self.kind,
                 manifest["method"]["name"], self.backend)

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
        g = self.manifest["graph"]
        if names_in != list(g["inputs"]) or names_out != list(g["outputs"]):
            raise EngineError(
                f"{self.path}: graph I/O {names_in} -> {names_out} does not match the manifest "
                f"{g['inputs']} -> {g['outputs']}"
            )
        for name, shape in want.items():
            if got.get(name) != shape:
                raise EngineError(
                    f"{self.path}: graph {name!r} has shape {got.get(name)}, the manifest's dims "
                    f"say {shape}"
                )

    # ------------------------------------------------------------ planning
    def _common(self, x0: Any, cond: Any, prev_plan: Any, noise: Any, cfg_w: float | None) -> dict[str, np.ndarray]:
        B, H, D = self.B, self.H, self.D
        w = self.manifest["diffusion"]["cfg_w"] if cfg_w is None else float(cfg_w)
        return {
            "x0": _as_array(x0, (B, self.S), "x0"),
            "cond": _as_array(cond, (B, self.C), "cond"),
            "prev_plan": _as_array(prev_plan, (B, H, D), "prev_plan"),
            "noise": _as_array(noise, (B, H, D), "noise"),
            "cfg_w": _as_array([w], (1,), "cfg_w"),
        }

    def plan(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray, noise: np.ndarray,
             levels: np.ndarray, cfg_w: float | None = None, prefix: Any = None,
             n_prefix: int = 0) -> PlanOutput:
        feeds = self._common(x0, cond, prev_plan, noise, cfg_w)
        feeds.update(self.prefix_inputs(prefix, n_prefix))
        lv = validate_levels(np.asarray(levels), self.K)
        if self.kind == "fused" and lv.size != self.n_steps + 1:
            raise ValueError(
                f"this fused engine unrolls {self.n_steps} steps: levels needs "
                f"{self.n_steps + 1} entries, got {lv.tolist()} (use a step engine to vary steps)"
            )
        return self._run(feeds, lv)

    def plan_trusted(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray,
                     noise: np.ndarray, levels: np.ndarray, cfg_w: float, prefix: Any = None,
                     n_prefix: int = 0) -> PlanOutput:
        """``plan`` without the per-call input checks (see ``Engine.plan_trusted``)."""
        w = self._cfg_arrays.get(cfg_w)
        if w is None:
            w = self._cfg_arrays[cfg_w] = np.array([cfg_w], np.float32)
        feeds = {"x0": x0, "cond": cond, "prev_plan": prev_plan, "noise": noise, "cfg_w": w}
        # {} for an engine without the prefix inputs (which raises when n_prefix > 0)
        feeds.update(self.prefix_inputs(prefix, n_prefix))
        return self._run(feeds, levels)

    def _run(self, feeds: dict[str, np.ndarray], lv: np.ndarray) -> PlanOutput:
        if self.kind != "fused":
            return self._run_steps(feeds, lv)
        feeds["levels"] = lv
        t0 = time.perf_counter()
        plan, score, best = self.session.run(self._out_names, feeds)
        ms = (time.perf_counter() - t0) * 1e3
        return PlanOutput(plan=plan, best=int(best[0]), score=score, infer_ms=ms)

    def _run_steps(self, feeds: dict[str, np.ndarray], lv: np.ndarray) -> PlanOutput:
        """The loop over reverse steps of a step engine (no update math here)."""
        steps_ms: list[float] = []
        tau = np.zeros((self.B, self.H, self.D), dtype=np.float32)
        pairs = list(zip(lv[:-1].tolist(), lv[1:].tolist(), strict=False))
        t_all = time.perf_counter()
        if self.io_binding:
            plan = self._run_steps_bound(feeds, tau, pairs, steps_ms)
        else:
            plan = tau
            for i, (k, kn) in enumerate(pairs):
                t0 = time.perf_counter()
                tau, plan = self.session.run(self._out_names, {
                    **feeds, "tau": tau,
                    "level": np.array([k], np.int64), "next_level": np.array([kn], np.int64),
                    "start": np.array([1 if i == 0 else 0], np.int64),
                })
                steps_ms.append((time.perf_counter() - t0) * 1e3)
        ms = (time.perf_counter() - t_all) * 1e3
        timings = {f"step{i}_ms": v for i, v in enumerate(steps_ms)}
        # The step graph has no ranker: candidate 0 is returned (N > 1 needs a fused engine).
        return PlanOutput(plan=plan, best=0, score=np.zeros(self.B, np.float32), infer_ms=ms,
                          timings=timings)

    def _run_steps_bound(self, feeds: dict[str, np.ndarray], tau0: np.ndarray,
                         pairs: list[tuple[int, int]], steps_ms: list[float]) -> np.ndarray:
        ort = _ort()
        dev = self._device
        binding = self.session.io_binding()
        for name, arr in feeds.items():  # constant over the loop: copied to the device once
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, dev, 0))
        shape = [self.B, self.H, self.D]
        bufs = [ort.OrtValue.ortvalue_from_numpy(tau0, dev, 0),
                ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)]
        plan_v = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
        binding.bind_ortvalue_output("plan", plan_v)
        for i, (k, kn) in enumerate(pairs):
            t0 = time.perf_counter()
            # Ping-pong the iterate between two device buffers: no host round trip per step.
            binding.bind_ortvalue_input("tau", bufs[i % 2])
            binding.bind_ortvalue_output("tau_next", bufs[(i + 1) % 2])
            binding.bind_cpu_input("level", np.array([k], np.int64))
            binding.bind_cpu_input("next_level", np.array([kn], np.int64))
            binding.bind_cpu_input("start", np.array([1 if i == 0 else 0], np.int64))
            self.session.run_with_iobinding(binding)
            steps_ms.append((time.perf_counter() - t0) * 1e3)
        return plan_v.numpy()

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

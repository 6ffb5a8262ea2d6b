"""Engine loading: pick the backend from the file type and return an ``Engine``.

``load_engine("go2.onnx")`` runs on ONNX Runtime (TensorRT EP > CUDA EP > CPU, whichever
this machine's onnxruntime offers, unless ``provider`` names one); ``load_engine("go2.plan")``
runs the TensorRT engine directly with CUDA buffers. Both verify the manifest and the
checksums, and check the engine against a robot profile when one is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner_runtime.engine import Engine, EngineError
from planner_runtime.engine_file import engine_kind

__all__ = ["BackendUnavailable", "Engine", "EngineError", "load_engine"]


class BackendUnavailable(EngineError, ImportError):
    """The backend an engine needs is not installed here (e.g. tensorrt, onnxruntime-gpu)."""


def load_engine(path: str | Path, provider: str | None = None, threads: int | None = None,
                profile: Mapping[str, Any] | None = None, **options: Any) -> Engine:
    """Load an engine file; the backend follows the file type (.onnx / .plan).

    provider: ONNX Runtime execution provider ("cpu", "cuda", "tensorrt" or a full EP name);
      None picks the best available. Ignored for .plan files (always TensorRT).
    threads: ONNX Runtime intra-op threads (None: ONNX Runtime's default).
    profile: a robot profile dict (see ``manifest.check_profile``); a mismatch is refused.
    options: backend-specific keywords (ORT: inter_threads, io_binding, trt_fp16;
      TensorRT: device).
    """
    kind = engine_kind(path)
    if kind == "onnx":
        from planner_runtime.backends.ort import OrtEngine

        return OrtEngine(path, provider=provider, threads=threads, profile=profile, **options)
    from planner_runtime.backends.tensorrt import TensorRTEngine

    if provider not in (None, "tensorrt", "TensorrtExecutionProvider"):
        raise EngineError(f"a .plan engine runs only on TensorRT, not provider {provider!r}")
    return TensorRTEngine(path, profile=profile, **options)

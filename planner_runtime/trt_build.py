"""ONNX engine -> TensorRT ``.plan`` container, with the tensorrt Python API (no trtexec).

Run on the target device: a TensorRT engine is tied to the GPU and TensorRT version that
built it. FP16 is optional; when it is on, only the heavy network layers (convolutions,
matrix multiplies, normalizations, activations) may run in half precision. Every other
layer -- the schedule look-ups (alpha_bar gathers, square roots), the DDIM update, CFG
mixing, clipping, the normalizer and the ranker's arithmetic -- is pinned to FP32 with
precision constraints, because the last cosine-schedule coefficients overflow fp16
(METHODS.md). A timing cache file makes rebuilds on the same device fast.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from planner_runtime.engine import EngineError
from planner_runtime.engine_file import load_onnx, sha256_hex, write_plan
from planner_runtime.manifest import Manifest

log = logging.getLogger(__name__)

# Layer types allowed to run in FP16 when fp16=True; everything else is kept FP32.
FP16_LAYER_TYPES = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY", "NORMALIZATION", "ACTIVATION")


def _keep_fp32(trt: Any, network: Any) -> int:
    """Pin every non-network layer to FP32; return how many layers were pinned."""
    allowed = {getattr(trt.LayerType, n) for n in FP16_LAYER_TYPES if hasattr(trt.LayerType, n)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in allowed:
            continue
        # Only float layers take a precision; int/bool layers (gathers of levels, argmax) are left alone.
        if all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def _device_name() -> str:
    """Name of GPU 0 (provenance only; "unknown" when it cannot be read)."""
    try:
        import ctypes

        from planner_runtime.backends.tensorrt import CudaRuntime

        lib = CudaRuntime().lib
        # cudaDeviceProp starts with char name[256]; CUDA 12+ exports the _v2 entry point.
        fn = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
        prop = ctypes.create_string_buffer(4096)
        if fn(prop, 0) != 0:
            return "unknown"
        return prop.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    except Exception:
        return "unknown"


def build_plan(onnx_path: str | Path, out_path: str | Path, fp16: bool = False,
               timing_cache: str | Path | None = None, workspace_mb: int = 1024,
               verbose: bool = False) -> Manifest:
    """Build ``out_path`` (.plan container) from an ONNX engine; return its manifest (as stored)."""
    from planner_runtime.backends.tensorrt import import_tensorrt

    trt = import_tensorrt()
    model, manifest = load_onnx(onnx_path)  # refuses unverified or foreign ONNX files
    onnx_bytes = Path(onnx_path).read_bytes()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    pinned = 0
    if fp16:
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; building anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        if not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            raise EngineError("this TensorRT has no precision constraints: build without --fp16")
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _keep_fp32(trt, network)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_bytes = bytes(serialized)
    build_s = time.perf_counter() - t0
    if cache_path is not None:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    device = _device_name()
    written = manifest.to_dict()
    written["tensorrt"] = {
        "version": trt.__version__, "fp16": bool(fp16), "fp32_pinned_layers": pinned,
        "device": device, "onnx_sha256": sha256_hex(onnx_bytes),
        "onnx_graph_sha256": manifest.checksums.graph_sha256, "build_s": round(build_s, 2),
    }
    stored = write_plan(out_path, written, engine_bytes)
    log.info("built %s in %.1f s (%d bytes, fp16=%s)", out_path, build_s, len(engine_bytes), fp16)
    return stored

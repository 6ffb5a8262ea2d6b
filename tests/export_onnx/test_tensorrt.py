"""TensorRT and CUDA paths (skipped where absent; run them on a GPU machine with
``pytest -m "tensorrt or gpu" tests/export_onnx``).

They use the real APIs: the ORT CUDA / TensorRT execution providers (onnxruntime-gpu) and
``planner-runtime build-engine`` + the ``.plan`` backend (tensorrt + libcudart). Parity
targets: CUDA EP fp32 <= 1e-4 like the CPU tests; TensorRT fp32 <= 1e-3 (TF32 tactics may
be chosen on Ampere+); TensorRT fp16 with the schedule math pinned to fp32 <= 5e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from planner_runtime.backends import load_engine  # noqa: E402


def _has_ep(name: str) -> bool:
    import onnxruntime

    return name in onnxruntime.get_available_providers()


def _has_trt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


needs_cuda_ep = pytest.mark.skipif(not _has_ep("CUDAExecutionProvider"),
                                   reason="onnxruntime-gpu with a CUDA GPU is not available here")
needs_trt_ep = pytest.mark.skipif(not _has_ep("TensorrtExecutionProvider"),
                                  reason="onnxruntime-gpu's TensorRT execution provider is not available here")
needs_trt = pytest.mark.skipif(not _has_trt(), reason="the tensorrt Python package (and a GPU) is not available here")


def _ref(sampler, inp):
    from export.sampling.base import FusedSampler

    a = [torch.as_tensor(inp[k]) for k in ("x0", "cond", "prev_plan", "noise", "levels")]
    with torch.no_grad():
        return FusedSampler(sampler)(*a, torch.tensor([2.0]))[0].numpy()


@pytest.mark.gpu
@needs_cuda_ep
@pytest.mark.parametrize("graph", ["fused", "step"])
def test_ort_cuda_parity(engines, plan_inputs_fn, graph):
    path, sampler = engines.get("mpdiffuser", graph)
    eng = load_engine(path, provider="cuda")
    assert eng.provider == "CUDAExecutionProvider"
    inp = plan_inputs_fn(1)
    assert np.abs(eng.plan(**inp).plan - _ref(sampler, inp)).max() <= 1e-4


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt_ep
def test_ort_tensorrt_ep_parity(engines, plan_inputs_fn):
    path, sampler = engines.get("mpdiffuser", "fused")
    eng = load_engine(path, provider="tensorrt")
    assert eng.provider == "TensorrtExecutionProvider"
    inp = plan_inputs_fn(1)
    assert np.abs(eng.plan(**inp).plan - _ref(sampler, inp)).max() <= 1e-3


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("graph,fp16,tol", [("fused", False, 1e-3), ("step", False, 1e-3),
                                            ("fused", True, 5e-2)])
def test_build_engine_and_run_plan(engines, plan_inputs_fn, tmp_path, graph, fp16, tol):
    from planner_runtime.cli import main
    from planner_runtime.engine_file import read_plan

    path, sampler = engines.get("mpdiffuser", graph)
    out = tmp_path / "e.plan"
    cache = tmp_path / "timing.cache"
    args = ["build-engine", str(path), "-o", str(out), "--timing-cache", str(cache)]
    assert main(args + (["--fp16"] if fp16 else [])) == 0
    assert cache.stat().st_size > 0
    manifest, _ = read_plan(out)
    assert manifest.tensorrt is not None and manifest.tensorrt["fp16"] is fp16
    eng = load_engine(out)
    assert eng.backend == "tensorrt"
    for cold in (False, True):
        inp = plan_inputs_fn(1, cold=cold)
        got = eng.plan(**inp).plan
        ref = _ref(sampler, inp)
        assert np.all(np.isfinite(got))
        bound = tol
        if cold:  # level K is ill-conditioned in fp32 (see test_parity.py): widen by the spread
            spread = np.abs(_ref(sampler, {**inp, "noise": inp["noise"] * np.float32(1 + 1e-6)}) - ref).max()
            bound = max(tol, 3.0 * spread)
        assert np.abs(got - ref).max() <= bound
    eng.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt
def test_plan_ranker_best_index(engines, plan_inputs_fn, tmp_path):
    from export.sampling.base import FusedSampler
    from planner_runtime.trt_build import build_plan

    path, sampler = engines.get("mpdiffuser", "fused", n_samples=3)
    out = tmp_path / "r.plan"
    build_plan(path, out)
    inp = plan_inputs_fn(3)
    a = [torch.as_tensor(inp[k]) for k in ("x0", "cond", "prev_plan", "noise", "levels")]
    with torch.no_grad():
        _, _, best = FusedSampler(sampler)(*a, torch.tensor([2.0]))
    assert load_engine(out).plan(**inp).best == int(best)

"""A mismatched or corrupt engine is refused with a clear error (ONNX and .plan container)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from planner_runtime import manifest as mf
from planner_runtime.backends import BackendUnavailable, load_engine
from planner_runtime.engine import EngineError
from planner_runtime.engine_file import (
    load_onnx,
    onnx_graph_sha256,
    pack_plan,
    read_manifest,
    unpack_plan,
)


def _rewrite_manifest(src: Path, dst: Path, edit) -> None:
    model = onnx.load(src)
    for p in model.metadata_props:
        if p.key == mf.ONNX_METADATA_KEY:
            m = json.loads(p.value)
            edit(m)
            p.value = json.dumps(m)
    onnx.save(model, dst)


@pytest.fixture
def engine_path(engines) -> Path:
    return engines.get("planner", "step")[0]


def test_good_engine_loads_and_verifies(engine_path):
    model, m = load_onnx(engine_path)
    assert m.checksums.graph_sha256 == onnx_graph_sha256(model)
    assert m.graph.kind == "step" and m.method.name == "planner"
    eng = load_engine(engine_path)
    assert eng.backend == "onnxruntime:CPUExecutionProvider"


def test_unknown_format_version(engine_path, tmp_path):
    bad = tmp_path / "v99.onnx"
    _rewrite_manifest(engine_path, bad, lambda m: m.update(format_version=99))
    with pytest.raises(EngineError, match="unknown engine format_version 99"):
        load_engine(bad)


def test_missing_metadata(engine_path, tmp_path):
    model = onnx.load(engine_path)
    del model.metadata_props[:]
    bad = tmp_path / "bare.onnx"
    onnx.save(model, bad)
    with pytest.raises(EngineError, match="missing engine metadata"):
        load_engine(bad)


def test_bad_checksum_after_weight_edit(engine_path, tmp_path):
    model = onnx.load(engine_path)
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, bad)
    with pytest.raises(EngineError, match="graph checksum mismatch"):
        load_engine(bad)
    assert read_manifest(bad, verify=False).method.name == "planner"


def test_truncated_file(engine_path, tmp_path):
    data = engine_path.read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError, match="corrupt|truncated|missing engine metadata"):
        load_engine(bad)


def test_garbage_and_missing_file(tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(EngineError):
        load_engine(bad)
    with pytest.raises(EngineError, match="not found"):
        load_engine(tmp_path / "nope.onnx")
    with pytest.raises(EngineError, match="unknown engine file type"):
        load_engine(bad.rename(tmp_path / "junk.bin"))


def test_manifest_dims_disagree_with_graph(engine_path, tmp_path):
    """A manifest edited to other dims (still self-consistent) is caught against the graph."""
    def edit(m):
        m["dims"]["H"] = m["dims"]["H"] * 2
    bad = tmp_path / "dims.onnx"
    _rewrite_manifest(engine_path, bad, edit)
    with pytest.raises(EngineError, match="shape"):
        load_engine(bad)


def test_profile_mismatch(engine_path):
    m = read_manifest(engine_path)
    ok = {"name": m.robot.name, "state_dim": m.dims.S, "action_dim": m.dims.A,
          "condition_dim": m.dims.C, "joint_names": list(m.action.joint_names),
          "action_scale": m.action.scale, "policy_dt": m.control.dt}
    load_engine(engine_path, profile=ok)
    with pytest.raises(EngineError, match=r"S \(state_dim\): engine has 6, profile .* has 30"):
        load_engine(engine_path, profile={**ok, "state_dim": 30})
    with pytest.raises(EngineError, match="joint order"):
        load_engine(engine_path, profile={**ok, "joint_names": ok["joint_names"][::-1]})
    # the action semantics are the engine's own (robot.actions); a profile does not pin them
    load_engine(engine_path, profile={**ok, "action_scale": 0.5})
    with pytest.raises(EngineError, match="control dt"):
        load_engine(engine_path, profile={**ok, "policy_dt": 0.002})


def test_bad_plan_inputs_are_refused(engine_path):
    eng = load_engine(engine_path)
    B, H, D = 1, eng.H, eng.D
    good = dict(x0=np.zeros((B, eng.S), np.float32), cond=np.zeros((B, eng.C), np.float32),
                prev_plan=np.zeros((B, H, D), np.float32), noise=np.zeros((B, H, D), np.float32),
                levels=np.array([3, 2, 1, 0]))
    eng.plan(**good)
    with pytest.raises(ValueError, match="x0 must have shape"):
        eng.plan(**{**good, "x0": np.zeros((B, eng.S + 1), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        eng.plan(**{**good, "noise": np.full((B, H, D), np.nan, np.float32)})
    with pytest.raises(ValueError, match="decrease strictly"):
        eng.plan(**{**good, "levels": np.array([1, 2, 0])})


def test_fused_engine_needs_its_step_count(engines):
    path, _ = engines.get("planner", "fused")
    eng = load_engine(path)
    S, C, H, D = eng.S, eng.C, eng.H, eng.D
    with pytest.raises(ValueError, match="unrolls 3 steps"):
        eng.plan(np.zeros((1, S)), np.zeros((1, C)), np.zeros((1, H, D)), np.zeros((1, H, D)),
                 np.array([1, 0]))


def test_provider_override(engine_path):
    eng = load_engine(engine_path, provider="cpu")
    assert eng.provider == "CPUExecutionProvider"
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        load_engine(engine_path, provider="cuda")


# ---------------------------------------------------------------- .plan container

@pytest.fixture
def plan_manifest(engine_path) -> mf.Manifest:
    return read_manifest(engine_path)


def test_plan_container_roundtrip_and_corruption(plan_manifest, tmp_path):
    blob = bytes(range(256)) * 40  # stands in for ICudaEngine.serialize(): the container is opaque to it
    data = pack_plan(plan_manifest, blob)
    m, e = unpack_plan(data)
    assert e == blob and m.checksums.plan_sha256 == hashlib.sha256(blob).hexdigest()
    assert m.method == plan_manifest.method and m.checksums.graph_sha256 == plan_manifest.checksums.graph_sha256
    with pytest.raises(EngineError, match="truncated|size mismatch"):
        unpack_plan(data[:-10])
    with pytest.raises(EngineError, match="too short"):
        unpack_plan(data[:5])
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    with pytest.raises(EngineError, match="checksum mismatch"):
        unpack_plan(bytes(flipped))
    with pytest.raises(EngineError, match="bad magic"):
        unpack_plan(b"XXXXXXXX" + data[8:])
    with pytest.raises(EngineError, match="container version"):
        unpack_plan(data[:8] + (7).to_bytes(4, "little") + data[12:])
    with pytest.raises(EngineError, match="size mismatch"):
        unpack_plan(data + b"extra")


def test_plan_without_tensorrt_is_a_clear_import_error(plan_manifest, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here: covered by the tensorrt-marked tests")
    except ImportError:
        pass
    p = tmp_path / "x.plan"
    p.write_bytes(pack_plan(plan_manifest, b"\x00" * 64))
    with pytest.raises(ImportError, match="TensorRT Python package is not installed"):
        load_engine(p)
    assert read_manifest(p).graph.kind == "step"  # info still works without TensorRT


def test_provider_preference_order():
    """TensorRT EP > CUDA EP > CPU when present; CUDA then CPU kept as fallbacks."""
    from planner_runtime.backends.ort import choose_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, gpu) == gpu
    assert choose_providers(None, gpu[1:]) == gpu[1:]
    assert choose_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", gpu) == gpu[1:]
    assert choose_providers("cpu", gpu) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="not available here"):
        choose_providers("tensorrt", gpu[1:])

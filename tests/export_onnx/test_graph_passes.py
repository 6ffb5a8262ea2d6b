"""Exact graph rewrites at export (export/graph_passes.py): GroupNorm's affine as one
BatchNormalization node. Real exports, real ONNX Runtime sessions; "exact" is checked as
bit-for-bit equal outputs, not within a tolerance."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from planner_runtime.cli import main
from planner_runtime.engine_file import load_onnx

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


def _session(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_every_groupnorm_affine_becomes_one_batchnorm_and_the_plans_are_bit_for_bit_the_same(
        plan_inputs_fn):
    """The tiny MPDiffuser fused graph (planner and dynamics U-Nets, 3 unrolled steps), traced
    once without and once with the passes: one BatchNormalization per GroupNorm (each an
    InstanceNormalization in the graph), two fewer Mul/Add per GroupNorm, and the same outputs
    to the last bit on warm and cold inputs."""
    from export.onnx_export import example_inputs, to_onnx
    from export.sampling.base import FusedSampler

    from .conftest import WARM, make_sampler

    sampler = make_sampler("mpdiffuser")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # trained-like affines: at their initial 1 / 0 the exporter merges them all
        for m in sampler.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    args = example_inputs(sampler, "fused", WARM, WARM)
    plain = to_onnx(FusedSampler(sampler), args, "fused", passes=())
    folded = to_onnx(FusedSampler(sampler), args, "fused")
    p, f = _ops(plain), _ops(folded)
    n_gn = p["InstanceNormalization"]
    assert n_gn > 0 and p["BatchNormalization"] == 0
    assert f["BatchNormalization"] == n_gn == f["InstanceNormalization"]
    assert (p["Mul"] - f["Mul"], p["Add"] - f["Add"]) == (n_gn, n_gn)
    # one scale / shift pair per GroupNorm module, shared by every unrolled step that runs it
    n_modules = sum(isinstance(m, torch.nn.GroupNorm) for m in sampler.modules())
    assert n_gn > n_modules
    assert len({n.input[1] for n in folded.graph.node if n.op_type == "BatchNormalization"}) == n_modules
    onnx.checker.check_model(folded, full_check=True)
    a, b = _session(plain), _session(folded)
    shapes = {i.name: i.shape for i in a.get_inputs()}
    for cold in (False, True):
        feeds = plan_inputs_fn(shapes["x0"][0], cold=cold)
        feeds.update(cfg_w=np.array([1.7], np.float32), n_prefix=np.array([1], np.int64),
                     prefix=np.random.default_rng(1).normal(size=shapes["prefix"]).astype(np.float32))
        feeds = {k: v for k, v in feeds.items() if k in shapes}
        for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
            np.testing.assert_array_equal(x, y)


def _affine_graph(scale: np.ndarray, shift: np.ndarray, shape: list[int], extra_reader: bool = False):
    """x -> Mul(scale) -> Add(shift) -> y (and, with ``extra_reader``, Mul's output also to z)."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["m"], ["z"]))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, shape))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outs,
                          [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(shift, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("case,folds", [
    ("channel [C, 1]", True),
    ("channel [1, C, 1]", True),
    ("last axis [L]", False),        # varies along the horizon, not the channels
    ("scalar-like [1, 1]", False),   # not a [C] vector: left to Mul / Add
    ("rank 2 input", False),         # no channel axis to normalize along
    ("Mul read twice", False),       # the product is needed on its own
])
def test_only_per_channel_affines_fold_and_what_folds_computes_the_same(case, folds):
    from export.graph_passes import fold_channel_affines

    rng = np.random.default_rng(0)
    B, C, L = 2, 4, 6
    shape = [B, C] if case == "rank 2 input" else [B, C, L]
    cshape = {"channel [C, 1]": [C, 1], "channel [1, C, 1]": [1, C, 1], "last axis [L]": [L],
              "scalar-like [1, 1]": [1, 1], "rank 2 input": [C], "Mul read twice": [C, 1]}[case]
    scale = rng.normal(size=cshape).astype(np.float32)
    shift = rng.normal(size=cshape).astype(np.float32)
    model = _affine_graph(scale, shift, shape, extra_reader=case == "Mul read twice")
    x = rng.normal(size=shape).astype(np.float32)
    want = _session(model).run(None, {"x": x})
    out, n = fold_channel_affines(onnx.load_from_string(model.SerializeToString()))
    assert n == (1 if folds else 0)
    assert ("BatchNormalization" in _ops(out)) == folds and ("Mul" in _ops(out)) != folds
    onnx.checker.check_model(out, full_check=True)
    for w, g in zip(want, _session(out).run(None, {"x": x}), strict=True):
        np.testing.assert_array_equal(w, g)
    np.testing.assert_array_equal(want[0], x * scale + shift)


def test_an_unknown_pass_is_refused_by_name():
    from export.graph_passes import apply_passes

    with pytest.raises(ValueError, match="unknown graph passes \\['fuse_everything'\\]"):
        apply_passes(onnx.ModelProto(), ["fuse_everything"])


def test_an_engine_written_without_the_passes_recovers_and_reexports_to_the_same_plans(
        tmp_path, write_checkpoints_fn, capsys):
    """`export --no-graph-passes` writes the traced graph and records no passes; its networks
    still come back exactly (the recovery rebuilds the graph the way the engine recorded), and
    exported again with the passes they plan the same numbers bit for bit with fewer nodes."""
    from export.from_engine import recover_components
    from export.train.checkpoint import load_checkpoint

    S, A, C, H = 5, 2, 2, 8
    ck = write_checkpoints_fn(tmp_path / "ck", S, A, C, H)
    plain, folded = tmp_path / "plain.onnx", tmp_path / "folded.onnx"
    common = ["--method", "mpdiffuser", "--graph", "fused", "--dt", "0.05", "--warm-level", "3"]
    assert main(["export", "--checkpoints", str(ck), *common, "-o", str(plain), "--no-graph-passes"]) == 0
    assert main(["export", "--checkpoints", str(plain), *common, "-o", str(folded)]) == 0
    (pm, pman), (fm, fman) = load_onnx(plain), load_onnx(folded)
    assert list(pman.provenance["graph_passes"]) == [] and list(fman.provenance["graph_passes"]) == ["fold_channel_affines"]
    assert "BatchNormalization" not in _ops(pm) and _ops(fm)["BatchNormalization"] == _ops(fm)["InstanceNormalization"]
    assert len(fm.graph.node) < len(pm.graph.node)
    capsys.readouterr()
    assert main(["info", str(plain)]) == 0 and "graph passes none (as traced)" in capsys.readouterr().out
    assert main(["info", str(folded)]) == 0 and "graph passes fold_channel_affines" in capsys.readouterr().out
    rec = recover_components(plain)
    for comp, r in rec.items():
        for k, v in load_checkpoint(ck / f"{comp}.pt")["ema"].items():
            assert torch.equal(r["ema"][k], v), (comp, k)
    a, b = _session(pm), _session(fm)
    rng = np.random.default_rng(2)
    feeds = {i.name: rng.normal(size=i.shape).astype(np.float32) for i in a.get_inputs()
             if i.type == "tensor(float)"}
    feeds.update(levels=np.array([3, 2, 1, 0], np.int64), cfg_w=np.array([1.3], np.float32),
                 n_prefix=np.array([2], np.int64))
    for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_embedded_engine_went_through_the_passes():
    """The shipped engine's graph is the folded one (and records it), so a re-export of its
    networks by the recipe reproduces it (test_from_engine checks the checksum)."""
    path = Path(__file__).resolve().parents[2] / "planner_runtime" / "engines" / "go2.onnx"
    model, man = load_onnx(path)
    assert list(man.provenance["graph_passes"]) == ["fold_channel_affines"]
    ops = _ops(model)
    assert ops["BatchNormalization"] == ops["InstanceNormalization"] > 0

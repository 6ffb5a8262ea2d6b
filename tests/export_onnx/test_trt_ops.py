"""Exported graphs use only operators TensorRT's ONNX parser supports (onnx-tensorrt's
docs/operators.md for TensorRT 10.0), and no Scatter ops (in-place slice assignment)."""

from __future__ import annotations

import onnx
import pytest

torch = pytest.importorskip("torch")

from export.trt_ops import ENGINE_OPS, TRT_MAX_OPSET, TRT_SUPPORTED  # noqa: E402

# The operators our exported samplers need, all methods (inspected from the graphs).
NEEDED = {
    "Add", "ArgMax", "ArgMin", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Div", "Equal", "Exp", "Expand", "Gather", "Gemm", "Greater",
    "Identity", "InstanceNormalization", "Less", "LessOrEqual", "MatMul", "Mul", "Pow", "ReduceSum",
    "Reshape", "Shape", "Sigmoid", "Sin", "Slice", "Softplus", "Split", "Squeeze", "Sub", "Tanh",
    "Transpose", "Unsqueeze", "Where",
}


def test_needed_ops_are_trt_supported():
    assert NEEDED <= TRT_SUPPORTED
    assert ENGINE_OPS <= TRT_SUPPORTED
    assert not {"ScatterND", "ScatterElements", "Scatter", "Loop", "If"} & ENGINE_OPS


@pytest.mark.parametrize("method,graph,n", [
    ("mpdiffuser", "fused", 1), ("mpdiffuser", "step", 1), ("planner", "fused", 3),
    ("dadp_f", "fused", 1), ("dadp_i", "step", 1), ("dmemm", "fused", 1),
])
def test_exported_graph_ops(engines, method, graph, n):
    path, _ = engines.get(method, graph, n_samples=n)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert ops <= NEEDED, f"new operators {sorted(ops - NEEDED)}: check them against TensorRT's list"
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= TRT_MAX_OPSET
    for vi in list(model.graph.input) + list(model.graph.output):  # fixed shapes everywhere
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi.name


def test_inplace_slice_assignment_is_refused(tmp_path):
    """The exporter's operator check catches what in-place slice assignment becomes."""
    from export.onnx_export import ExportError, check_graph, to_onnx

    class Inplace(torch.nn.Module):
        def forward(self, x0, cond, prev_plan, noise, levels, cfg_w, prefix, n_prefix):
            out = prev_plan.clone()
            out[:, 0, :] = noise[:, 0, :] * cfg_w + prefix[:, 0, :1] * n_prefix
            return out, cond[:, 0], levels[:1]

    args = (torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 4, 3), torch.ones(1, 4, 3),
            torch.tensor([2, 1, 0]), torch.tensor([2.0]), torch.zeros(1, 4, 1), torch.tensor([1]))
    model = to_onnx(Inplace(), args, "fused")
    assert any(n.op_type.startswith("Scatter") for n in model.graph.node)
    with pytest.raises(ExportError, match="Scatter"):
        check_graph(model)


def test_non_constant_axes_are_refused():
    """TensorRT needs Slice/Squeeze/Unsqueeze/ReduceSum axes as constants."""
    from onnx import TensorProto, helper

    from export.onnx_export import ExportError, check_graph

    g = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "ax"], ["y"], name="u")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("ax", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ExportError, match="non-constant axes"):
        check_graph(model)

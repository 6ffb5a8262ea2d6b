"""ONNX operators TensorRT's ONNX parser supports, and the ones our engines may use.

``TRT_SUPPORTED`` is the "Y" column of onnx-tensorrt's docs/operators.md (TensorRT 10.0,
opsets 9-20; repository onnx/onnx-tensorrt, commit 96e7811, June 2024), transcribed as a
fact list. ``ENGINE_OPS`` is what planner-runtime's exported graphs are allowed to contain:
every entry is in ``TRT_SUPPORTED``; the exporter refuses a graph with anything else, and
tests/export_onnx/test_trt_ops.py checks both. Scatter ops are deliberately absent from
``ENGINE_OPS``: they are what in-place slice assignment in torch code exports to.
"""

from __future__ import annotations

TRT_SOURCE = "onnx/onnx-tensorrt docs/operators.md @ 96e781103cfc (TensorRT 10.0, opset 9-20)"
TRT_MAX_OPSET = 20

TRT_SUPPORTED: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Hardmax
Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad
ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# The operators exported samplers need (U-Net, MLPs and their closed-form gradients, the
# schedule gathers, DDIM/CFG arithmetic, clipping, the ranker's argmax/where), and
# BatchNormalization, which ``export.graph_passes`` puts in place of GroupNorm's affine.
ENGINE_OPS: frozenset[str] = frozenset("""
Abs Add And ArgMax ArgMin BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv
ConvTranspose Cos Div Equal Erf Exp Expand Flatten Gather Gemm Greater GreaterOrEqual GroupNormalization Identity
InstanceNormalization LeakyRelu Less LessOrEqual Log MatMul Max Min Mish Mul Neg Not Or Pow
Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape Shape Sigmoid Sign Sin Slice
Softplus Split Sqrt Squeeze Sub Sum Tanh Tile Transpose Unsqueeze Where
""".split())


def unsupported_ops(op_types: set[str]) -> tuple[set[str], set[str]]:
    """(ops TensorRT cannot parse, ops outside ENGINE_OPS) among ``op_types``."""
    return set(op_types) - TRT_SUPPORTED, set(op_types) - ENGINE_OPS

"""Exact rewrites of an exported ONNX graph that make it cheaper to run.

ONNX Runtime's CPU provider pays a few microseconds per node whatever it computes, and its
broadcasting Mul / Add over a per-channel constant ([C, 1]) costs more than a
BatchNormalization node doing the same arithmetic. The planner U-Net's GroupNorms export as
Reshape, InstanceNormalization, Reshape, then the affine as Mul(gamma [C, 1]) and
Add(beta [C, 1]); ``fold_channel_affines`` turns every such Mul + Add pair (any per-channel
constant scale followed by a per-channel constant shift, on a tensor whose channel axis is 1)
into one BatchNormalization with mean 0, variance 1 and epsilon 0, which computes
x * gamma / sqrt(1 + 0) + beta = x * gamma + beta: the same operations on the same numbers.
TensorRT's parser reads BatchNormalization as a scale layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

# the passes every export runs, in order; an engine's manifest records the ones its graph went
# through (provenance.graph_passes), so ``export.from_engine`` rebuilds it the same way
DEFAULT_PASSES: tuple[str, ...] = ("fold_channel_affines",)


def apply_passes(model: onnx.ModelProto, names: tuple[str, ...] | list[str]) -> onnx.ModelProto:
    """Run the named passes over ``model`` (in place) and return it."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ValueError(f"unknown graph passes {unknown}; known: {sorted(PASSES)}")
    for n in names:
        model, _ = PASSES[n](model)
    return model  # PASSES: name -> pass, at the end of this module


def _constants(graph: onnx.GraphProto) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(every initializer, Constant-node output (tensor-valued) and Identity of one, by name;
    each such name -> the initializer or Constant output it copies). The exporter reads a
    parameter shared by the unrolled steps through Identity nodes, one per step."""
    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    root = {name: name for name in out}
    for n in graph.node:  # topological order: an Identity's input is resolved before it
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            root[n.output[0]] = n.output[0]
        elif n.op_type == "Identity" and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]]
            root[n.output[0]] = root[n.input[0]]
    return out, root


def _channel_vector(c: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``c`` as a [channels] float32 vector when broadcasting it against a rank-``rank``
    tensor varies it along axis 1 only (shape [C, 1, ...] or [1, C, 1, ...]); else None."""
    if c.dtype != np.float32 or c.ndim > rank or c.ndim < rank - 1:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return c.reshape(channels)


def fold_channel_affines(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace each Mul(x, scale) -> Add(., shift) with per-channel constants by one
    BatchNormalization(x, scale, shift, 0, 1, epsilon=0). Returns (model, pairs folded).
    Needs static shapes (``onnx.shape_inference``) for x; a pair whose Mul output has any
    other consumer, or whose x has an unknown rank or channel count, is left as it is."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[Any]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    g = model.graph
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    pre = "affine"
    while any(name.startswith(pre) for name in taken):
        pre += "_"
    consts, root = _constants(g)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    index = {n.output[0]: i for i, n in enumerate(g.node) if n.output}
    replace: dict[int, onnx.NodeProto] = {}  # position of the Mul -> its BatchNormalization
    drop: set[int] = set()  # positions of the folded Adds
    new_inits: list[onnx.TensorProto] = []
    made: dict[tuple[str, str], list[str]] = {}  # (scale, shift) constant -> BN's names
    unit: dict[int, list[str]] = {}  # channels -> the shared zero mean / unit variance
    for pos, n in enumerate(g.node):
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        x, s = (n.input[0], n.input[1]) if n.input[1] in consts else (n.input[1], n.input[0])
        shp = shapes.get(x)
        if s not in consts or x in consts or not shp or len(shp) < 3 or shp[1] is None:
            continue
        if shapes.get(n.output[0]) != shp or n.output[0] in outputs:
            continue
        nxt = users.get(n.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Add" or len(nxt[0].input) != 2:
            continue
        add = nxt[0]
        b = add.input[1] if add.input[0] == n.output[0] else add.input[0]
        if b not in consts or shapes.get(add.output[0]) != shp:
            continue
        C = int(shp[1])
        scale = _channel_vector(consts[s], len(shp), C)
        shift = _channel_vector(consts[b], len(shp), C)
        if scale is None or shift is None:
            continue
        key = (root[s], root[b])
        if key not in made:  # one set of constants per parameter pair, shared by the steps
            k = len(made)
            made[key] = [f"{pre}{k}_scale", f"{pre}{k}_shift"]
            new_inits += [numpy_helper.from_array(np.ascontiguousarray(scale), made[key][0]),
                          numpy_helper.from_array(np.ascontiguousarray(shift), made[key][1])]
        if C not in unit:
            unit[C] = [f"{pre}_c{C}_mean", f"{pre}_c{C}_var"]
            new_inits += [numpy_helper.from_array(np.zeros(C, np.float32), unit[C][0]),
                          numpy_helper.from_array(np.ones(C, np.float32), unit[C][1])]
        replace[pos] = helper.make_node("BatchNormalization", [x, *made[key], *unit[C]],
                                        [add.output[0]], name=f"{pre}_{add.output[0]}", epsilon=0.0)
        drop.add(index[add.output[0]])
    if not replace:
        return model, 0
    nodes = [replace.get(i, n) for i, n in enumerate(g.node) if i not in drop]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    _drop_unread(g)
    return model, len(replace)


def _drop_unread(g: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read (the folded constants' Constant and
    Identity nodes), to a fixed point, then the initializers nobody reads."""
    outputs = {o.name for o in g.output}
    while True:
        read = {i for n in g.node for i in n.input} | outputs
        nodes = [n for n in g.node if any(o in read for o in n.output)]
        if len(nodes) == len(g.node):
            break
        del g.node[:]
        g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)


PASSES = {"fold_channel_affines": fold_channel_affines}

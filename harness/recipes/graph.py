"""Graph rewrites the recipes share: topological order, constant folding, BatchNorm folding, opset upgrade."""

from __future__ import annotations

import fnmatch
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

SUBGRAPH_OPS = ("If", "Loop", "Scan")
# ops whose result is not a pure function of their inputs, or that are too large to fold
NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
           *SUBGRAPH_OPS}
FOLD_LIMIT = 1 << 22  # elements: folding must not blow up the file


def opset_of(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                out[name].append((node, i))
    return out


def subgraph_references(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from outer scopes: used inside but neither produced nor declared there."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        local.update(o for o in node.output if o)
        used.update(i for i in node.input if i)
        for attr in node.attribute:
            for g in _attr_graphs(attr):
                used |= subgraph_references(g)
    return used - local


def _attr_graphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def node_graphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in node.attribute for g in _attr_graphs(a)]


def node_label(node: onnx.NodeProto) -> str:
    """How recipes name a node: its name, or for an unnamed node its first output's name."""
    return node.name or (node.output[0] if node.output else node.op_type)


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph and of its subgraphs, outer ones first."""
    for node in graph.node:
        yield node
        for g in node_graphs(node):
            yield from walk_nodes(g)


def match_nodes(graph: onnx.GraphProto, patterns: Iterable[str], option: str) -> dict[str, list[str]]:
    """Node labels (subgraphs' included) per name or glob pattern; a pattern matching no node is refused, since
    it is most likely a typo that would silently keep nothing out of the recipe."""
    labels = [node_label(n) for n in walk_nodes(graph)]
    found: dict[str, list[str]] = {}
    for pat in patterns:
        hits = [label for label in labels if fnmatch.fnmatchcase(label, pat)]
        if not hits:
            from ..errors import RecipeError

            raise RecipeError(f"{option} pattern {pat!r} matches no node of the model (its {len(labels)} node names "
                              f"look like {', '.join(repr(x) for x in labels[:6])}); unnamed nodes go by their first "
                              "output's name")
        found[pat] = hits
    return found


def rename_outer_reference(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename reads of an outer-scope name inside a subgraph (and its subgraphs), unless shadowed there."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    if old in local:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for g in node_graphs(node):
            rename_outer_reference(g, old, new)
    for out in graph.output:
        if out.name == old:  # a subgraph output that passes an outer value through
            out.name = new


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every node comes after the producers of what it reads (subgraph reads included)."""
    produced_by: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for o in node.output:
            if o:
                produced_by[o] = idx
    deps: dict[int, set[int]] = {}
    for idx, node in enumerate(graph.node):
        reads = {i for i in node.input if i}
        for g in node_graphs(node):
            reads |= subgraph_references(g)
        deps[idx] = {produced_by[r] for r in reads if r in produced_by and produced_by[r] != idx}
    indegree = {i: len(d) for i, d in deps.items()}
    users: dict[int, list[int]] = defaultdict(list)
    for i, d in deps.items():
        for j in d:
            users[j].append(i)
    ready = deque(sorted(i for i, n in indegree.items() if n == 0))
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        raise ValueError("the graph has a cycle")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Turn ``Constant`` nodes holding a tensor into initializers (one code path for all constants)."""
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            graph.initializer.append(t)
            moved += 1
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return moved


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate nodes whose inputs are all constants (with ONNX's reference evaluator); returns how many."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    outputs = {o.name for o in graph.output}
    folded = 0
    changed = True
    while changed:
        changed = False
        consts = {i.name: i for i in graph.initializer}
        keep = []
        for node in graph.node:
            foldable = (node.domain in ("", "ai.onnx") and node.op_type not in NO_FOLD and node.input
                        and all((not i) or i in consts for i in node.input)
                        and not any(o in outputs for o in node.output))
            if foldable:
                values = _evaluate(ReferenceEvaluator, model, node, consts)
                if values is not None and all(v.size <= FOLD_LIMIT for v in values):
                    for name, v in zip(node.output, values):
                        graph.initializer.append(numpy_helper.from_array(np.asarray(v), name))
                    folded += 1
                    changed = True
                    continue
            keep.append(node)
        del graph.node[:]
        graph.node.extend(keep)
    _drop_unused_initializers(graph)
    return folded


def _evaluate(evaluator: Any, model: onnx.ModelProto, node: onnx.NodeProto,
              consts: dict[str, onnx.TensorProto]) -> list[np.ndarray] | None:
    try:
        inputs = [i for i in node.input if i]
        g = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                              [consts[i] for i in inputs])
        m = helper.make_model(g, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        return [np.asarray(v) for v in evaluator(m).run(None, {})]
    except Exception:  # the reference evaluator lacks some ops or attributes: leave the node as it is
        return None


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for n in graph.node:
        for g in node_graphs(n):
            used |= subgraph_references(g)
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def fold_batchnorm(model: onnx.ModelProto) -> dict[str, int]:
    """Fold inference BatchNorms into a preceding Conv, or else into Mul + Add, computing in float64.

    A running variance beyond the FP16 range (65504) then never reaches FP16: only the combined scale
    ``gamma / sqrt(var + eps)`` does, which is a small number. Run shape inference first: a BatchNorm
    that is not after a Conv needs its input's rank to be known, and is left alone otherwise.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = consumers(graph)
    produced = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    counts = {"batchnorm_folded_into_conv": 0, "batchnorm_to_mul_add": 0, "batchnorm_left": 0}
    new_nodes: list[onnx.NodeProto] = []
    removed: set[int] = set()
    for node in list(graph.node):
        if node.op_type != "BatchNormalization" or len([o for o in node.output if o]) != 1:
            continue
        if not all(n in inits for n in node.input[1:5]):
            counts["batchnorm_left"] += 1
            continue
        dtype = numpy_helper.to_array(inits[node.input[1]]).dtype
        scale, bias, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        k = scale / np.sqrt(var + eps)
        shift = bias - mean * k
        x = node.input[0]
        conv = produced.get(x)
        base = node.name or node.output[0]
        if (conv is not None and conv.op_type == "Conv" and len(users[x]) == 1 and x not in outputs
                and conv.input[1] in inits and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in inits)):
            w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
            has_bias = len(conv.input) > 2 and bool(conv.input[2])
            b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(w.shape[0])
            w_name, b_name = f"{base}__folded_w", f"{base}__folded_b"
            graph.initializer.extend([
                numpy_helper.from_array((w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(dtype), w_name),
                numpy_helper.from_array((b * k + shift).astype(dtype), b_name)])
            _rewrite_conv(conv, w_name, b_name, node.output[0])
            removed.add(id(node))
            counts["batchnorm_folded_into_conv"] += 1
            continue
        shape = _shape_of(model, x)
        if shape is None:
            counts["batchnorm_left"] += 1
            continue
        bshape = [1, -1] + [1] * max(len(shape) - 2, 0)
        k_name, s_name, mid = f"{base}__scale", f"{base}__shift", f"{base}__scaled"
        graph.initializer.extend([numpy_helper.from_array(k.reshape(bshape).astype(dtype), k_name),
                                  numpy_helper.from_array(shift.reshape(bshape).astype(dtype), s_name)])
        new_nodes += [helper.make_node("Mul", [x, k_name], [mid], name=f"{base}__mul"),
                      helper.make_node("Add", [mid, s_name], [node.output[0]], name=f"{base}__add")]
        removed.add(id(node))
        counts["batchnorm_to_mul_add"] += 1
    keep = [n for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(keep + new_nodes)
    topological_sort(graph)
    _drop_unused_initializers(graph)
    return counts


def _rewrite_conv(conv: onnx.NodeProto, w_name: str, b_name: str, new_output: str) -> None:
    x = conv.input[0] if conv.input else ""
    del conv.input[:]
    conv.input.extend([x, w_name, b_name])
    conv.output[0] = new_output


def _shape_of(model: onnx.ModelProto, name: str) -> list[Any] | None:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return list(vi.type.tensor_type.shape.dim)
    return None


def upgrade_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """The model converted to opset ``target`` with ONNX's version converter (raises on failure)."""
    from onnx import version_converter

    upgraded = version_converter.convert_version(model, target)
    onnx.checker.check_model(upgraded)
    return upgraded


def count_ops(nodes: Iterable[onnx.NodeProto]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for n in nodes:
        out[n.op_type] += 1
    return dict(sorted(out.items()))

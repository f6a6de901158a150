"""FP16 / BF16 conversion with FP32 inputs and outputs.

Plain float16 conversion breaks many real exported models. This one decides, node by node, from each
operator's schema, which tensors may change type, and inserts a Cast wherever a producer and a consumer
disagree:

* BatchNorms are folded first (into the Conv before them, or into Mul + Add) in float64, and constants are
  folded, so that a running variance beyond the FP16 range never reaches FP16;
* inputs an operator's schema restricts to float32 (Resize's ``scales``...) stay float32;
* ``Cast(to=FLOAT)`` inside the converted region becomes ``Cast(to=FLOAT16)``, so no stale FP32 island is
  left behind, and ``ConstantOfShape`` values follow;
* a graph output that is also read inside the graph is produced under an internal name, read from there
  by the other nodes, and cast to FP32 under its own name;
* ``If`` / ``Loop`` / ``Scan`` nodes keep FP32 inputs and outputs; the outer values their subgraphs read are
  cast back to FP32 for them, and each subgraph is converted inside the same way, with FP32 at its boundary
  (a model whose whole network sits inside an ``If`` is converted, not left in FP32);
* ops in the block list (and custom-domain ops) stay FP32, with Casts around them, and so do the nodes that
  ``keep_fp32`` names (node names or globs);
* FP16 weights beyond ±65504 are clamped and weights that underflow to zero are counted.

Everything it did is returned as a dict for the result rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import RecipeError
from .graph import (
    SUBGRAPH_OPS,
    constants_to_initializers,
    count_ops,
    fold_batchnorm,
    fold_constants,
    match_nodes,
    node_graphs,
    node_label,
    rename_outer_reference,
    subgraph_references,
    topological_sort,
)

FLOAT = TensorProto.FLOAT
TARGETS: dict[str, int] = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
TYPE_STR: dict[int, str] = {TensorProto.FLOAT16: "tensor(float16)", TensorProto.BFLOAT16: "tensor(bfloat16)"}
SHORT: dict[int, str] = {TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16", FLOAT: "fp32"}
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24
# ops whose output type comes from an attribute or that draw random numbers: kept in FP32 by default
DEFAULT_BLOCK = ("EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "NonMaxSuppression", "TopK", "Range")


def _schema(node: onnx.NodeProto, opset: int) -> Any:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # unknown op (custom domain, typo): the node is kept in FP32
        return None


def _formal(schema: Any, is_input: bool, idx: int) -> Any:
    params = schema.inputs if is_input else schema.outputs
    if not params:
        return None
    if idx < len(params):
        return params[idx]
    last = params[-1]
    return last if last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic else None


def _allowed(schema: Any, is_input: bool, idx: int, type_str: str) -> bool:
    p = _formal(schema, is_input, idx)
    if p is None:
        return False
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    allowed = constraints.get(p.type_str, [p.type_str])
    return type_str in allowed


def _type_var(schema: Any, is_input: bool, idx: int) -> str | None:
    p = _formal(schema, is_input, idx)
    return p.type_str if p is not None else None


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every tensor, subgraphs' included (shape inference types those too)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types: dict[str, int] = {}

    def collect(g: onnx.GraphProto) -> None:
        types.update({vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input)
                      + list(g.output) if vi.type.HasField("tensor_type")})
        types.update({i.name: i.data_type for i in g.initializer})
        for node in g.node:
            for sub in node_graphs(node):
                collect(sub)

    collect(inferred.graph)
    return types


def _to_target(arr: np.ndarray, name: str, target: int, stats: dict[str, int]) -> onnx.TensorProto:
    a = np.asarray(arr, dtype=np.float32)
    if target == TensorProto.FLOAT16:
        finite = np.isfinite(a)
        big = finite & (np.abs(a) > FP16_MAX)
        tiny = (a != 0) & (np.abs(a) < FP16_TINY)
        stats["weights_clamped"] += int(big.sum())
        stats["weights_underflowed"] += int(tiny.sum())
        return numpy_helper.from_array(np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16), name)
    # bfloat16: round to nearest even on the upper 16 bits of the float32 pattern
    u = a.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    rounded = np.where(np.isnan(a), np.uint16(0x7FC0), rounded)
    t = onnx.TensorProto()
    t.name = name
    t.data_type = TensorProto.BFLOAT16
    t.dims.extend(a.shape)
    t.raw_data = rounded.astype("<u2").tobytes()
    return t


def convert_float(model: onnx.ModelProto, kind: str, *, block_ops: tuple[str, ...] = (),
                  keep_fp32: tuple[str, ...] = (), fold: bool = True) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return the converted model and a record of what was done (``nodes``: the converted and kept nodes by
    name)."""
    target = TARGETS[kind]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    info: dict[str, Any] = {"target": kind, "opset": opset}
    keep = match_nodes(m.graph, keep_fp32, "keep_fp32") if keep_fp32 else {}
    info["constants_to_initializers"] = constants_to_initializers(m.graph)
    if fold:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
        info.update(fold_batchnorm(m))
        info["constants_folded"] = fold_constants(m)
    conv = _Converter(target, opset, _types(m), set(DEFAULT_BLOCK) | set(block_ops),
                      {n for names in keep.values() for n in names})
    conv.graph(m.graph, scope="")
    stats = conv.stats
    info.update(dict(stats))
    info["casts_retyped"] = conv.casts_retyped
    info["nodes_converted"] = count_ops(conv.converted)
    info["nodes_kept_fp32"] = conv.kept[:50]
    info["nodes_kept_fp32_count"] = len(conv.kept)
    info["outputs_cast_back"] = sorted(conv.renamed_outputs)
    if conv.subgraphs:
        info["subgraphs_converted"] = conv.subgraphs
    if keep:
        info["keep_fp32"] = {"patterns": list(keep_fp32), "nodes": sorted({n for v in keep.values() for n in v})}
    info["nodes"] = {"converted": [node_label(n) for n in conv.retyped], "kept_fp32": [k["node"] for k in conv.kept]}
    if not conv.retyped:
        info["no_op"] = _no_op_reason(kind, conv.kept)
    if target == TensorProto.FLOAT16 and stats["weights_clamped"]:
        info["warning"] = f"{stats['weights_clamped']} weights exceeded the FP16 range and were clamped to ±65504"
    return m, info


def _no_op_reason(kind: str, kept: list[dict[str, str]]) -> str:
    if not kept:
        return f"the model has no float32 tensors that {kind} could hold: the artifact computes what the source does"
    reasons: dict[str, int] = defaultdict(int)
    for k in kept:
        reasons[k["reason"]] += 1
    listed = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"nothing was converted to {kind}: every float node is kept in FP32 ({listed})"


class _Converter:
    """Converts one graph, then the subgraphs of its If / Loop / Scan nodes, each with FP32 at its boundary:
    outer values and formal inputs come in as FP32 and are cast where a converted node reads them; outputs
    leave as FP32."""

    def __init__(self, target: int, opset: int, types: dict[str, int], blocked: set[str], keep: set[str]):
        self.target, self.opset, self.types, self.blocked, self.keep = target, opset, types, blocked, keep
        self.tstr, self.tag = TYPE_STR[target], SHORT[target]
        self.stats: dict[str, int] = defaultdict(int)
        self.kept: list[dict[str, str]] = []
        self.converted: list[onnx.NodeProto] = []  # every node left to the target type (the report's count)
        self.retyped: list[onnx.NodeProto] = []  # those of them that read or write a float tensor in it
        self.casts_retyped = 0
        self.renamed_outputs: list[str] = []
        self.subgraphs: list[str] = []
        self._scopes = 0

    def _reason(self, node: onnx.NodeProto, schema: Any) -> str | None:
        if node_label(node) in self.keep:
            return "in keep_fp32"
        if node.op_type in self.blocked:
            return "in the block list"
        if node.domain not in ("", "ai.onnx"):
            return f"custom domain {node.domain!r}"
        if node.op_type in SUBGRAPH_OPS:
            return "has subgraphs: its inputs and outputs stay FP32, its subgraphs are converted inside"
        if schema is None:
            return "unknown operator"
        return None

    def graph(self, graph: onnx.GraphProto, scope: str) -> None:
        target, types = self.target, self.types
        outer = subgraph_references(graph) if scope else set()
        # 1. which nodes convert, and the type each of their float slots wants / produces
        wants: dict[tuple[int, int], int] = {}  # (node index, input slot) -> type wanted, float32 tensors only
        produces: dict[str, int] = {}  # tensor -> type it is produced with (float32 tensors only)
        retype_cast: list[onnx.NodeProto] = []
        retype_const: list[onnx.NodeProto] = []
        for ni, node in enumerate(graph.node):
            schema = _schema(node, self.opset) if node.domain in ("", "ai.onnx") else None
            reason = self._reason(node, schema)
            convert = reason is None
            if not convert and any(types.get(t) == FLOAT for t in list(node.input) + list(node.output) if t):
                self.kept.append({"node": node_label(node), "op": node.op_type, "reason": str(reason)})
            if convert:
                self.converted.append(node)
            changed = False
            for i, t in enumerate(node.input):
                if t and types.get(t) == FLOAT:
                    wants[(ni, i)] = target if convert and _allowed(schema, True, i, self.tstr) else FLOAT
                    changed |= wants[(ni, i)] == target
            for j, t in enumerate(node.output):
                if not t:
                    continue
                ty = types.get(t)
                if ty is None and convert:
                    ty = _infer_from_inputs(schema, node, j, types)
                if ty is None and convert:
                    raise RecipeError(f"shape inference could not type tensor {t!r} (output of {node.op_type} node "
                                      f"{node.name!r}); cannot convert to {SHORT[target]} safely")
                if node.op_type == "Cast" and convert:
                    to = next(a.i for a in node.attribute if a.name == "to")
                    if to == FLOAT:
                        retype_cast.append(node)
                        produces[t] = target
                        changed = True
                    continue
                if node.op_type == "ConstantOfShape" and convert:
                    value = next((a.t for a in node.attribute if a.name == "value"), None)
                    if value is not None and value.data_type == FLOAT:
                        retype_const.append(node)
                        produces[t] = target
                        changed = True
                    continue
                if ty == FLOAT:
                    produces[t] = target if convert and _allowed(schema, False, j, self.tstr) else FLOAT
                    changed |= produces[t] == target
            if changed:
                self.retyped.append(node)

        # 2. outer values read inside the subgraphs of this graph's nodes want FP32
        inits = {i.name: i for i in graph.initializer}
        graph_inputs = {i.name for i in graph.input}
        sub_reads: list[tuple[onnx.NodeProto, str]] = []
        for node in graph.node:
            for g in node_graphs(node):
                for r in sorted(subgraph_references(g)):
                    if types.get(r) == FLOAT:
                        sub_reads.append((node, r))

        # 3. initializers: converted in place if every reader wants the target type, else copied
        stats = self.stats
        init_readers: dict[str, set[int]] = defaultdict(set)
        for (ni, i), ty in wants.items():
            t = graph.node[ni].input[i]
            if t in inits and t not in graph_inputs:
                init_readers[t].add(ty)
        for _, r in sub_reads:
            if r in inits:
                init_readers[r].add(FLOAT)
        source: dict[tuple[str, int], str] = {}  # (tensor, type) -> name holding that tensor in that type
        for name, tys in init_readers.items():
            init = inits[name]
            if init.data_type != FLOAT:
                continue
            if tys == {target}:
                init.CopyFrom(_to_target(numpy_helper.to_array(init), name, target, stats))
                source[(name, target)] = name
                stats["initializers_converted"] += 1
            elif target in tys:
                copy = f"{name}__{self.tag}"
                graph.initializer.append(_to_target(numpy_helper.to_array(init), copy, target, stats))
                source[(name, target)] = copy
                source[(name, FLOAT)] = name
                stats["initializers_copied"] += 1
            else:
                source[(name, FLOAT)] = name

        # 4. graph outputs produced in the target type get an internal name and a final Cast to FP32
        outputs = {o.name for o in graph.output}
        renamed: dict[str, str] = {}
        for node in graph.node:
            for j, t in enumerate(node.output):
                if t in outputs and produces.get(t) == target:
                    internal = f"{t}__{self.tag}"
                    node.output[j] = internal
                    renamed[t] = internal
        for t, ty in produces.items():
            source.setdefault((t, ty), renamed.get(t, t))
        for t in graph_inputs | outer:
            if types.get(t) == FLOAT:
                source[(t, FLOAT)] = t
        if not scope:
            self.renamed_outputs += list(renamed)

        new_nodes: list[onnx.NodeProto] = []

        def fetch(t: str, ty: int) -> str:
            """The name under which tensor ``t`` is available as type ``ty``, adding a Cast if needed."""
            if (t, ty) in source:
                return source[(t, ty)]
            have = next(((s_ty, n) for (s_t, s_ty), n in source.items() if s_t == t), None)
            if have is None:
                raise RecipeError(f"tensor {t!r} has no producer the converter knows of")
            name = t if (ty == FLOAT and t in renamed) else f"{t}__to_{SHORT[ty]}{scope}"
            new_nodes.append(helper.make_node("Cast", [have[1]], [name], name=f"{name}__cast", to=ty))
            stats["casts_inserted"] += 1
            source[(t, ty)] = name
            types[name] = ty
            return name

        for (ni, i), ty in wants.items():
            node = graph.node[ni]
            t = node.input[i]
            node.input[i] = fetch(t, ty)
        for t in renamed:
            fetch(t, FLOAT)  # the graph output under its own name, in FP32
        for node, r in sub_reads:
            fp32 = fetch(r, FLOAT)
            if fp32 != r:
                for g in node_graphs(node):
                    rename_outer_reference(g, r, fp32)
        for node in retype_cast:
            for a in node.attribute:
                if a.name == "to":
                    a.i = target
        self.casts_retyped += len(retype_cast)
        for node in retype_const:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(_to_target(numpy_helper.to_array(a.t), a.t.name, target, stats))

        graph.node.extend(new_nodes)
        del graph.value_info[:]  # stale types; consumers re-infer
        topological_sort(graph)
        # 5. inside each subgraph, the same with FP32 at its boundary
        for node in list(graph.node):
            for attr in node.attribute:
                for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    self._scopes += 1
                    self.graph(g, scope=f"__s{self._scopes}")
                    self.subgraphs.append(f"{node_label(node)}.{attr.name}")


def _infer_from_inputs(schema: Any, node: onnx.NodeProto, j: int, types: dict[str, int]) -> int | None:
    """An untyped output's type from an input bound to the same type variable."""
    var = _type_var(schema, False, j)
    for i, t in enumerate(node.input):
        if t and _type_var(schema, True, i) == var and t in types:
            return types[t]
    return None


"""Which tensors of a recipe's model are the FP32 model's, and the models the doctor runs to compare them.

A recipe keeps the names of what it converts: a converted or quantized node still writes its output under the
FP32 model's tensor name. What it adds is *glue*: ``QuantizeLinear`` / ``DequantizeLinear`` pairs (int8) and
``Cast`` nodes (fp16, bf16), under new names (``x_DequantizeLinear_Output``, ``x__to_fp16``); a graph output
produced in FP16 is written as ``y__fp16`` and cast back to ``y``. So a node of the recipe's model is
*matched* when it is not glue and one of its float outputs maps to an FP32 tensor (by name, or by name less
``__fp16`` / ``__bf16``). BatchNorms folded into a Conv leave the Conv writing the BatchNorm's output name,
which matches too.

A graph output ONNX Runtime's quantizer quantizes is written as ``y_QuantizeLinear_Input`` by its producer and
as ``y`` by the Q/DQ pair after it: the producer is compared at ``y``, with that pair counted as its own.

For each matched node the doctor runs it alone on FP32 values: its *local* model holds the node, the glue
between it and the tensors the FP32 model has (the Q/DQ on its inputs, the Casts into FP16, the Q/DQ on a
quantized graph output after it), and the initializers it reads; its inputs are those FP32 tensors, fed with the FP32 model's values (cast to the type
the recipe stores them in). Its error against the FP32 output is the error the node itself adds.

Nothing here runs a model: :mod:`harness.doctor.compare` does, chunk by chunk (:func:`chunks`), so that only
a bounded number of tensors is ever marked as outputs at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..recipes.graph import node_graphs, node_label

QDQ = ("QuantizeLinear", "DequantizeLinear")
# a graph output produced in the target type (harness.recipes.float16), and a graph output ONNX Runtime's
# quantizer quantizes: its producer writes NAME_QuantizeLinear_Input, a Q/DQ pair then writes NAME
SUFFIXES = ("__fp16", "__bf16", "_QuantizeLinear_Input")
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
NUMPY: dict[int, Any] = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
LOCAL = "__local"  # suffix of a node's outputs in a local model (its inputs may be another node's outputs)


@dataclass
class Graph:
    """Name facts of one model: who produces each tensor, its initializers, graph inputs and element types."""

    model: onnx.ModelProto
    producer: dict[str, int]
    inits: dict[str, onnx.TensorProto]
    inputs: list[str]
    types: dict[str, int]
    consumers: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Graph:
        g = model.graph
        inits = {i.name: i for i in g.initializer}
        inputs = [i.name for i in g.input if i.name not in inits]
        producer = {o: k for k, n in enumerate(g.node) for o in n.output if o}
        consumers: dict[str, list[int]] = {}
        for k, n in enumerate(g.node):
            for i in n.input:
                consumers.setdefault(i, []).append(k)
        return cls(model, producer, inits, inputs, element_types(model), consumers)

    @property
    def available(self) -> set[str]:
        """Tensors that carry values at run time: graph inputs and node outputs."""
        return set(self.inputs) | set(self.producer)


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every main-graph tensor that shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model shape inference refuses: what the file declares is all there is
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]
             if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


@dataclass
class NodePlan:
    """One matched node of the recipe's model: what to compare, and how to run it alone."""

    index: int  # position in the recipe's graph
    label: str  # its name as keep_fp32 takes it
    op: str
    outputs: list[tuple[str, str]]  # (recipe tensor, FP32 tensor) of its float outputs
    boundary: list[tuple[str, str]] = field(default_factory=list)  # (recipe tensor, FP32 tensor) fed FP32 values
    # the nodes between the boundary and the node: glue, and nodes the recipe added whose outputs have no FP32
    # counterpart (ONNX Runtime's preprocessing rewrites Transpose / Squeeze, Shape of a dequantized tensor)
    glue: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)  # the Q/DQ pair of a quantized graph output it writes
    no_local: str | None = None  # why it cannot be run alone, or None

    def tensors(self) -> set[str]:
        """The FP32 tensors the doctor needs for this node: its outputs and what its local model is fed."""
        return {f for _, f in self.outputs} | {f for _, f in self.boundary}


class Matcher:
    """Maps the recipe model's tensors and nodes onto the FP32 model's."""

    def __init__(self, recipe: Graph, fp32: Graph):
        self.recipe, self.fp32 = recipe, fp32
        self._available = fp32.available

    def fp32_name(self, tensor: str) -> str | None:
        if tensor in self._available:
            return tensor
        for s in SUFFIXES:
            if tensor.endswith(s) and tensor[: -len(s)] in self._available:
                return tensor[: -len(s)]
        return None

    def is_glue(self, node: onnx.NodeProto) -> bool:
        """Q/DQ, and a Cast that either writes a name the FP32 model lacks or only changes a tensor's type."""
        if node.op_type in QDQ:
            return True
        if node.op_type != "Cast" or not node.output:
            return False
        out = self.fp32_name(node.output[0])
        return out is None or out == self.fp32_name(node.input[0])

    def plan(self) -> list[NodePlan]:
        """Every matched node of the recipe's main graph, in its (topological) order."""
        plans = []
        for k, node in enumerate(self.recipe.model.graph.node):
            if self.is_glue(node):
                continue
            outs, after = [], []
            for o in node.output:
                f = self.fp32_name(o) if o else None
                if f is None or self.fp32.types.get(f) != TensorProto.FLOAT or self.recipe.types.get(o) not in FLOATS:
                    continue
                pair = self._output_qdq(o, f) if o != f else None
                outs.append((f, f) if pair else (o, f))
                after += pair or []
            if not outs:
                continue
            plan = NodePlan(k, node_label(node), node.op_type, outs, after=after)
            self._closure(node, plan)
            plans.append(plan)
        return plans

    def _output_qdq(self, tensor: str, name: str) -> list[int] | None:
        """The QuantizeLinear and DequantizeLinear that turn ``tensor`` into the graph output ``name``."""
        nodes = self.recipe.model.graph.node
        for q in self.recipe.consumers.get(tensor, []):
            if nodes[q].op_type != "QuantizeLinear":
                continue
            for dq in self.recipe.consumers.get(nodes[q].output[0], []):
                if nodes[dq].op_type == "DequantizeLinear" and nodes[dq].output[0] == name:
                    return [q, dq]
        return None

    def _closure(self, node: onnx.NodeProto, plan: NodePlan) -> None:
        """The nodes and FP32 tensors the node's local model needs: walking back from its inputs through glue
        and through tensors the FP32 model lacks, to tensors it has (or initializers)."""
        if node_graphs(node):
            plan.no_local = "has subgraphs (If / Loop / Scan)"
            return
        seen: set[str] = set()
        glue: set[int] = set()
        stack = [i for i in node.input if i]
        while stack:
            t = stack.pop()
            if t in seen or t in self.recipe.inits:
                continue
            seen.add(t)
            k = self.recipe.producer.get(t)
            f = self.fp32_name(t)
            if k is not None and (f is None or self.is_glue(self.recipe.model.graph.node[k])):
                between = self.recipe.model.graph.node[k]
                if node_graphs(between):
                    plan.no_local = f"input {t!r} comes from a node with subgraphs"
                    return
                glue.add(k)
                stack += [i for i in between.input if i]
                continue
            if f is None or f not in self.fp32.types or t not in self.recipe.types:
                plan.no_local = f"input {t!r} has no typed FP32 counterpart"
                return
            plan.boundary.append((t, f))
        plan.glue = sorted(glue)


def chunks(plans: list[NodePlan], limit: int) -> Iterator[list[NodePlan]]:
    """Consecutive nodes whose FP32 tensors (outputs and local inputs) number at most ``limit`` together; a
    node needing more than ``limit`` alone is a chunk of its own."""
    current: list[NodePlan] = []
    tensors: set[str] = set()
    for p in plans:
        need = p.tensors()
        if current and len(tensors | need) > limit:
            yield current
            current, tensors = [], set()
        current.append(p)
        tensors |= need
    if current:
        yield current


def with_outputs(graph: Graph, names: list[str]) -> bytes:
    """The model with exactly ``names`` as its outputs (each typed as inferred), serialized for a session."""
    m = onnx.ModelProto()
    m.CopyFrom(graph.model)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(n, graph.types[n], None) for n in names)
    return m.SerializeToString()


def local_model(recipe: Graph, plans: list[NodePlan]) -> tuple[bytes, dict[str, tuple[int, str]]]:
    """One model holding each plan's node alone with its glue, side by side: inputs are the boundary tensors
    (recipe names and types), outputs each node's matched outputs renamed ``<name>__local``. Returns it and,
    per output, (the plan's position in ``plans``, the FP32 tensor it is compared with)."""
    g = recipe.model.graph
    glue = sorted({k for p in plans for k in p.glue})
    nodes: list[onnx.NodeProto] = [g.node[k] for k in glue]
    outputs: dict[str, tuple[int, str]] = {}
    for i, p in enumerate(plans):
        renamed: dict[str, str] = {}
        for k in [p.index, *p.after]:  # the node's outputs (and its output Q/DQ's) under names of their own
            n = onnx.NodeProto()
            n.CopyFrom(g.node[k])
            for j, t in enumerate(n.input):
                n.input[j] = renamed.get(t, t)
            for j, o in enumerate(n.output):
                if o:
                    renamed[o] = n.output[j] = o + LOCAL
            nodes.append(n)
        for o, f in p.outputs:
            outputs[o + LOCAL] = (i, f)
    boundary = sorted({t for p in plans for t, _ in p.boundary})
    read = {i for n in nodes for i in n.input if i}
    graph = helper.make_graph(
        nodes, "doctor_local",
        [helper.make_tensor_value_info(t, recipe.types[t], None) for t in boundary],
        [helper.make_tensor_value_info(o, recipe.types[o[: -len(LOCAL)]], None) for o in outputs],
        [recipe.inits[t] for t in sorted(read) if t in recipe.inits and t not in boundary])
    m = helper.make_model(graph, opset_imports=list(recipe.model.opset_import))
    m.ir_version = recipe.model.ir_version
    m.functions.extend(recipe.model.functions)
    return m.SerializeToString(), outputs


def as_stored(value: np.ndarray, elem_type: int) -> np.ndarray:
    """An FP32 value in the type the recipe stores that tensor in (FP16 for a converted tensor)."""
    dtype = NUMPY.get(elem_type)
    return value if dtype is None or value.dtype == dtype else value.astype(dtype)

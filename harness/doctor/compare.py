"""Where the error starts: the recipe's model against the FP32 model, node by node, in bounded memory.

For a few evaluation samples (one run per sample, so that a tensor's error needs no batch axis), every matched
node's outputs (:mod:`harness.doctor.tensors`) are compared with the FP32 model's: the relative L2 error
``‖y − r‖ / ‖r‖`` the node *carries* (cumulative: the recipe's whole model up to it) and the error it *adds*
(local: the node alone, with its Q/DQ or Casts, fed the FP32 values of its inputs). Both models run on ONNX
Runtime CPU with graph optimizations off: the artifact as its ONNX defines it, the same on every CPU.

Memory stays bounded by the chunk size: tensors are marked as graph outputs at most ``chunk`` at a time (a
chunk's nodes' outputs and their local inputs), never all at once (marking every tensor of a large net keeps
its whole activation set alive, tens of GB); each chunk runs the FP32 model, the recipe's model and the
chunk's local model per sample, and only the errors are kept. The peak of the tensors held (numpy bytes) and
the process's RSS are reported.

The result is cached (kind ``doctor``), keyed by both models' bytes, the samples and ONNX Runtime's version.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .tensors import Graph, Matcher, NodePlan, as_stored, chunks, local_model, with_outputs

COMPARE_VERSION = 1
DEFAULT_CHUNK = 64


@dataclass
class NodeError:
    """One node's errors over the samples (relative L2; inf where the recipe's values are not finite)."""

    order: int  # position among the matched nodes (topological)
    node: str
    op: str
    tensor: str  # the FP32 tensor compared (the worst of the node's float outputs)
    cumulative: float  # mean over samples
    cumulative_max: float
    local: float | None  # mean over samples; None where the node cannot run alone
    local_max: float | None
    fp32_absmax: float  # the largest |value| of the FP32 tensor (FP16 holds up to 65504)
    note: str = ""

    @property
    def sensitivity(self) -> float:
        """What ranks the node for the search: the error it adds alone, else what it carries."""
        return self.local if self.local is not None else self.cumulative


@dataclass
class Comparison:
    nodes: list[NodeError]
    samples: int
    chunk: int
    chunks: int
    seconds: float
    held_peak_bytes: int  # the most bytes of tensors (numpy arrays) held at once
    rss_peak_mb: float | None
    unmatched: int = 0  # nodes of the recipe's model with no FP32 counterpart (glue excluded)
    complete: bool = True  # False when the time budget ended it early
    cached: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "cached"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        data = dict(data)
        nodes = [NodeError(**n) for n in data.pop("nodes")]
        return cls(nodes=nodes, **data)


def rel_l2(y: np.ndarray, r: np.ndarray) -> float:
    y64 = np.asarray(y, dtype=np.float64)
    r64 = np.asarray(r, dtype=np.float64)
    if y64.shape != r64.shape:
        return math.nan
    if not np.isfinite(y64).all():
        return math.inf
    return float(np.linalg.norm(y64 - r64) / max(float(np.linalg.norm(r64)), 1e-12))


class _Acc:
    """Per-node running errors over samples."""

    def __init__(self) -> None:
        self.cum: dict[int, list[float]] = {}
        self.loc: dict[int, list[float]] = {}
        self.absmax: dict[int, float] = {}
        self.tensor: dict[int, str] = {}


def _session(model: bytes | str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def compare_models(fp32_model: Any, recipe_model: Any, feeds: Sequence[dict[str, np.ndarray]], *,
                   chunk: int = DEFAULT_CHUNK, deadline: float | None = None,
                   progress: Callable[[str], None] | None = None) -> Comparison:
    """Compare two ``onnx.ModelProto`` node by node on ``feeds`` (one dict of inputs per sample)."""
    from ..resources import ResourceMonitor

    t0 = time.perf_counter()
    recipe, fp32 = Graph.of(recipe_model), Graph.of(fp32_model)
    matcher = Matcher(recipe, fp32)
    plans = matcher.plan()
    glue = sum(1 for n in recipe_model.graph.node if matcher.is_glue(n))
    unmatched = len(recipe_model.graph.node) - glue - len(plans)
    groups = list(chunks(plans, max(1, chunk)))
    acc = _Acc()
    held = 0
    complete = True
    notes: list[str] = []
    with ResourceMonitor(interval=0.1) as mon:
        for c, group in enumerate(groups):
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                notes.append(f"time budget reached after {c} of {len(groups)} chunks: later nodes not compared")
                break
            if progress:
                progress(f"comparing node by node: chunk {c + 1}/{len(groups)} ({len(group)} nodes), "
                         f"{len(feeds)} samples")
            held = max(held, _run_chunk(group, recipe, fp32, feeds, acc, notes))
    nodes = []
    for i, p in enumerate(plans):
        if p.index not in acc.cum:
            continue
        cum, loc = acc.cum[p.index], acc.loc.get(p.index)
        nodes.append(NodeError(i, p.label, p.op, acc.tensor[p.index], _mean(cum), max(cum),
                               _mean(loc) if loc else None, max(loc) if loc else None, acc.absmax[p.index],
                               p.no_local or ""))
    return Comparison(nodes, len(feeds), chunk, len(groups), round(time.perf_counter() - t0, 3), held,
                      mon.result.get("rss_peak_mb"), unmatched, complete, notes=notes)


def _mean(xs: list[float]) -> float:
    return math.inf if any(math.isinf(x) for x in xs) else float(np.mean(xs))


def _run_chunk(group: list[NodePlan], recipe: Graph, fp32: Graph, feeds: Sequence[dict[str, np.ndarray]],
               acc: _Acc, notes: list[str]) -> int:
    """Run one chunk on every sample; returns the most bytes of tensors it held at once."""
    inputs = set(fp32.inputs)
    wanted = sorted({t for p in group for t in p.tensors()} - inputs)
    fp32_sess = _session(with_outputs(fp32, wanted))
    rec_names = sorted({o for p in group for o, _ in p.outputs})
    rec_sess = _session(with_outputs(recipe, rec_names))
    local = [p for p in group if p.no_local is None]
    local_sessions = _local_sessions(recipe, local, notes)
    held = 0
    for sample in feeds:
        ref = dict(zip(wanted, fp32_sess.run(wanted, sample)))
        ref.update({k: v for k, v in sample.items() if k in inputs})
        got = dict(zip(rec_names, rec_sess.run(rec_names, sample)))
        size = sum(v.nbytes for v in ref.values()) + sum(v.nbytes for v in got.values())
        for p in group:
            errs = [(rel_l2(got[o], ref[f]), f) for o, f in p.outputs]
            err, f = max(errs, key=lambda e: (math.isnan(e[0]), e[0]))
            acc.cum.setdefault(p.index, []).append(err)
            acc.tensor[p.index] = f
            acc.absmax[p.index] = max(acc.absmax.get(p.index, 0.0),
                                      max(float(np.abs(ref[f]).max(initial=0.0)) for _, f in p.outputs))
        for sess, members, outs in local_sessions:
            bnames = [i.name for i in sess.get_inputs()]
            lfeeds = {t: as_stored(ref[_fp32_of(members, t)], recipe.types[t]) for t in bnames}
            vals = dict(zip(outs, sess.run(list(outs), lfeeds)))
            # a feed cast to FP16 is a copy; one fed as it is shares the FP32 value's memory
            size_local = sum(v.nbytes for t, v in lfeeds.items() if v is not ref[_fp32_of(members, t)])
            size_local += sum(v.nbytes for v in vals.values())
            held = max(held, size + size_local)
            per: dict[int, float] = {}
            for o, (i, f) in outs.items():
                per[i] = max(per.get(i, 0.0), rel_l2(vals[o], ref[f]))
            for i, e in per.items():
                acc.loc.setdefault(members[i].index, []).append(e)
            del vals, lfeeds
        held = max(held, size)
        del ref, got
    return held


def _fp32_of(members: list[NodePlan], tensor: str) -> str:
    for p in members:
        for t, f in p.boundary:
            if t == tensor:
                return f
    raise KeyError(tensor)


def _local_sessions(recipe: Graph, plans: list[NodePlan], notes: list[str]
                    ) -> list[tuple[Any, list[NodePlan], dict[str, tuple[int, str]]]]:
    """One session for the chunk's local models side by side; where ONNX Runtime refuses it, one per node
    (a node it refuses alone gets no local error, and says why)."""
    if not plans:
        return []
    try:
        model, outs = local_model(recipe, plans)
        return [(_session(model), plans, outs)]
    except Exception:  # find the node at fault: the others still get their local errors
        pass
    out = []
    for p in plans:
        try:
            model, outs = local_model(recipe, [p])
            out.append((_session(model), [p], outs))
        except Exception as exc:
            p.no_local = f"cannot run alone: {str(exc).splitlines()[0][:120]}"
            notes.append(f"node {p.label!r}: {p.no_local}")
    return out


def cached_comparison(cache: Any, label: str, fp32_path: Path, recipe_path: Path, recipe_hash: str,
                      samples_key: dict[str, Any], feeds: Sequence[dict[str, np.ndarray]], *, chunk: int,
                      deadline: float | None, progress: Callable[[str], None] | None) -> Comparison:
    """:func:`compare_models` of two files, cached (an incomplete comparison, cut short by the time budget, is
    returned and not cached)."""
    import json

    import onnx
    import onnxruntime as ort

    from ..cache import digest

    parts = {"fp32": digest(fp32_path)[1], "recipe": recipe_hash, "samples": samples_key,
             "onnxruntime": ort.__version__, "version": COMPARE_VERSION}
    result: list[Comparison] = []

    def build(path: Path) -> dict[str, Any]:
        comp = compare_models(onnx.load(str(fp32_path)), onnx.load(str(recipe_path)), feeds, chunk=chunk,
                              deadline=deadline, progress=progress)
        result.append(comp)
        if not comp.complete:
            raise _Incomplete()
        path.write_text(json.dumps(comp.to_dict(), allow_nan=True))
        return {"nodes": len(comp.nodes), "seconds": comp.seconds}

    try:
        entry = cache.get_or_build("doctor", label, parts, "nodes.json", build)
    except _Incomplete:
        return result[0]
    if result:
        return result[0]
    comp = Comparison.from_dict(json.loads(entry.path.read_text()))
    comp.cached = True
    return comp


class _Incomplete(Exception):
    """A comparison the time budget cut short: returned, never cached."""

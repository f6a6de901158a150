"""The merged engine: a station's models composed into one ONNX graph, built and cached like any model.

Each member's recipe artifact (the very file its separate engine is built from) is upgraded to the highest
opset among the members where it is lower (ONNX's version converter: one opset per graph), given the IR
version of the newest, and every name in it — inputs, outputs, nodes, initializers, and the names of its
dynamic dimensions — prefixed with ``m<index>.<model>/`` (``onnx.compose.add_prefix``), so that two copies
of one model stay apart. ``onnx.compose.merge_models`` with no connections then lays the graphs side by
side: one graph whose inputs are every member's inputs and whose outputs are every member's outputs. The
composed file is a cache entry (kind ``merged``) keyed by the members' artifact hashes and prefixes; the
backend builds it for a profile that is the members' profiles side by side, through the same cache.

Before the merged engine is timed, :func:`compare_outputs` checks it against the separate engines on the
frame's inputs: per output, the relative L2 error ``‖merged − separate‖ / ‖separate‖`` must be within
:data:`TOLERANCE` of the member's recipe kind (FP32: 1e-5, the registry's FP32 budget; reduced precisions
1e-2, where a GPU builder may pick other kernels for the bigger network).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import Cache, Entry
from ..errors import BuildError
from ..profiles import Profile

MERGE_VERSION = 1  # bump when the composition changes what it writes: cached merged models are then rebuilt
TOLERANCE = {"fp32": 1e-5}
REDUCED_TOLERANCE = 1e-2


def member_prefix(index: int, model: str) -> str:
    """The prefix of member ``index``'s names in the merged graph: ``m0.segmenter/``."""
    return f"m{index}.{model}/"


def tolerance(recipe_kind: str) -> float:
    return TOLERANCE.get(recipe_kind, REDUCED_TOLERANCE)


@dataclass
class MergedArtifact:
    """The composed ONNX file, its profile (the members' side by side) and what the composition did."""

    path: Path
    model_hash: str
    profile: Profile
    prefixes: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    entry: Entry | None = None


def _prefix_dims(graph: Any, prefix: str) -> None:
    """Prefix the names of dynamic dimensions, so that members' ``batch`` or ``width`` stay separate symbols
    (ONNX Runtime pins named dimensions by name under a fixed profile)."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            for d in value.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param:
                    d.dim_param = prefix + d.dim_param


def compose(paths: Sequence[Path], prefixes: Sequence[str], name: str = "station") -> tuple[Any, dict[str, Any]]:
    """The ONNX model with every member's graph side by side, names prefixed; and facts about it."""
    import onnx
    import onnx.compose

    from ..recipes.graph import opset_of, upgrade_opset

    models = [onnx.load(str(p)) for p in paths]
    target = max(opset_of(m) for m in models)
    ir = max(m.ir_version for m in models)
    info: dict[str, Any] = {"opset": target, "ir_version": ir, "members": len(models), "upgraded": []}
    prepared = []
    for m, prefix, path in zip(models, prefixes, paths):
        own = opset_of(m)
        if own < target:
            try:
                m = upgrade_opset(m, target)
            except Exception as exc:  # the converter raises several types
                raise BuildError(f"merging station {name!r}: {path} (opset {own}) cannot be converted to opset "
                                 f"{target}, the highest among the station's models: {str(exc)[:300]}") from None
            info["upgraded"].append(f"{prefix.rstrip('/')} {own} -> {target}")
        m.ir_version = ir
        m = onnx.compose.add_prefix(m, prefix)
        _prefix_dims(m.graph, prefix)
        prepared.append(m)
    try:
        merged = functools.reduce(lambda a, b: onnx.compose.merge_models(a, b, io_map=[]), prepared)
    except ValueError as exc:  # opset or IR conflicts in other domains, name clashes
        raise BuildError(f"merging station {name!r}: onnx.compose cannot merge its models: {exc}") from None
    merged.graph.name = name
    onnx.checker.check_model(merged)
    info.update(inputs=[i.name for i in merged.graph.input], outputs=[o.name for o in merged.graph.output],
                nodes=len(merged.graph.node))
    return merged, info


def merged_profile(profiles: Sequence[Profile], prefixes: Sequence[str]) -> Profile:
    """The members' profiles side by side, under the prefixed input names."""
    lo: dict[str, tuple[int, ...]] = {}
    mid: dict[str, tuple[int, ...]] = {}
    hi: dict[str, tuple[int, ...]] = {}
    for prof, prefix in zip(profiles, prefixes):
        for inp in prof.opt:
            lo[prefix + inp], mid[prefix + inp], hi[prefix + inp] = prof.min[inp], prof.opt[inp], prof.max[inp]
    return Profile("+".join(dict.fromkeys(p.name for p in profiles)), lo, mid, hi, fixed=lo == hi)


def merge_station(station: str, label: str, artifacts: Sequence[tuple[str, Path, str]], profiles: Sequence[Profile],
                  cache: Cache) -> MergedArtifact:
    """Compose (or take from the cache) the merged model of ``artifacts``: (model name, ONNX path, its hash)
    per member, in member order. ``label`` names the cache folder (the station's recipes)."""
    import onnx

    prefixes = [member_prefix(i, model) for i, (model, _, _) in enumerate(artifacts)]
    parts = {"merge": MERGE_VERSION, "onnx": onnx.__version__,
             "members": [{"model": model, "artifact": digest, "prefix": prefix}
                         for (model, _, digest), prefix in zip(artifacts, prefixes)]}

    def build(path: Path) -> dict[str, Any]:
        model, info = compose([p for _, p, _ in artifacts], prefixes, station)
        onnx.save(model, str(path))
        return info

    entry = cache.get_or_build("merged", f"{station}/{label}", parts, "model.onnx", build)
    return MergedArtifact(entry.path, entry.meta["sha256"], merged_profile(profiles, prefixes), prefixes,
                          entry.info, entry)


def merged_feeds(feeds: Sequence[Mapping[str, np.ndarray]], prefixes: Sequence[str]) -> dict[str, np.ndarray]:
    return {prefix + name: value for f, prefix in zip(feeds, prefixes) for name, value in f.items()}


def compare_outputs(separate: Sequence[Mapping[str, np.ndarray]], merged: Mapping[str, np.ndarray],
                    prefixes: Sequence[str], tolerances: Sequence[float]) -> dict[str, Any]:
    """Each member's outputs from the separate engine against the merged engine's, per output: relative L2
    error and max absolute difference; ``passed`` when every output is within its member's tolerance."""
    rows: list[dict[str, Any]] = []
    for outs, prefix, tol in zip(separate, prefixes, tolerances):
        for name, ref in outs.items():
            got = merged.get(prefix + name)
            row: dict[str, Any] = {"output": prefix + name, "tolerance": tol}
            if got is None or np.shape(got) != np.shape(ref):
                row.update(passed=False, problem=f"shape {None if got is None else list(np.shape(got))} where the "
                           f"separate model gives {list(np.shape(ref))}")
            else:
                r = np.asarray(ref, dtype=np.float64)
                diff = np.asarray(got, dtype=np.float64) - r
                finite = bool(np.isfinite(diff).all())
                rel = float(np.linalg.norm(diff) / max(float(np.linalg.norm(r)), 1e-12)) if finite else float("inf")
                row.update(rel_l2=rel, max_abs=float(np.abs(diff).max()) if diff.size else 0.0,
                           passed=finite and rel <= tol)
            rows.append(row)
    worst = max((r.get("rel_l2", float("inf")) for r in rows), default=0.0)
    return {"outputs": rows, "max_rel_l2": worst, "passed": all(r["passed"] for r in rows)}


def describe_failure(check: dict[str, Any]) -> str:
    bad = [r for r in check["outputs"] if not r["passed"]]
    parts = [f"{r['output']}: {r['problem']}" if "problem" in r else
             f"{r['output']}: rel_l2 {r['rel_l2']:.3g} > {r['tolerance']:g} (max abs {r['max_abs']:.3g})" for r in bad]
    return (f"the merged engine's outputs differ from the separate models' in {len(bad)} of {len(check['outputs'])} "
            "outputs: " + "; ".join(parts))

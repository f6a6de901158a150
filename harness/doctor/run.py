"""The doctor on one accuracy case, end to end, and on the failed cases of a pytest session.

For a case (model, backend, recipe, profile) whose gate fails: gate the recipe (the verdict before), compare
its model with the FP32 model node by node on a few samples (:mod:`harness.doctor.compare`), search for the
smallest keep_fp32 list that passes (:mod:`harness.doctor.search`), write it as a recipe, re-gate that recipe
as written, price it (:mod:`harness.doctor.prescription`) and record all of it as a
:class:`~harness.rows.DoctorRow`. The whole run keeps to a time budget; progress goes to ``progress``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..budgets import Budget
from ..checks import case_expectation
from ..data import SampleSet
from ..errors import HarnessError
from ..recipes.graph import node_label, walk_nodes
from ..reference import reference_outputs
from ..rows import AccuracyRow, DoctorRow
from ..session import AccuracyCase, HarnessSession
from .compare import DEFAULT_CHUNK, Comparison, NodeError, cached_comparison
from .gate import Gate, GateResult, converted_nodes
from .prescription import recipe_from_toml, recipe_toml, serial_price, with_keep
from .search import Search

KINDS = ("fp16", "int8")  # bf16: ONNX Runtime CPU, which compares node by node, has no bfloat16 kernels
FOLDER = "doctor"  # under the report folder: one TOML file per case fixed


@dataclass
class DoctorOptions:
    samples: int = 4  # compared node by node
    max_minutes: float = 10.0
    chunk: int = DEFAULT_CHUNK  # tensors marked as outputs at once
    budgets: list[str] | None = None  # replace the case's budgets (e.g. a tighter one to aim for)
    price_seconds: float = 1.0
    top: int = 12  # nodes kept in the row (the most sensitive, and the first over the scale)


def error_scale(budgets: list[Budget]) -> tuple[float, str]:
    """The relative L2 error the budgets tolerate, to judge one tensor by: the tightest rel_l2 bound (or share
    threshold); else from a cosine bound c, sqrt(2 (1 - c)) (for vectors of equal norm ‖y − r‖² / ‖r‖² =
    2 (1 − cos)); else 1 %."""
    rel = [b.threshold if b.threshold is not None else b.bound for b in budgets
           if b.metric == "rel_l2" and b.op.startswith("<") and not b.relative]
    if rel:
        b = min((b for b in budgets if b.metric == "rel_l2" and b.op.startswith("<")),
                key=lambda b: b.threshold if b.threshold is not None else b.bound)
        return float(min(rel)), b.label
    cos = [b for b in budgets if b.metric == "cosine" and b.op.startswith(">")]
    if cos:
        b = max(cos, key=lambda b: b.bound)
        return math.sqrt(2.0 * max(1.0 - b.bound, 0.0)), f"{b.label} (rel_l2 ≈ sqrt(2 (1 - cosine)))"
    return 0.01, "no rel_l2 or cosine budget: 1 %"


def _budget(text: str) -> Budget:
    try:
        return Budget.parse(text)
    except ValueError as exc:
        raise HarnessError(f"--budget: {exc}") from None


def ranked_candidates(candidates: list[str], comp: Comparison) -> list[str]:
    """Candidates most sensitive first; those the comparison did not measure last, in graph order."""
    score = {n.node: n.sensitivity for n in comp.nodes}
    return sorted(candidates, key=lambda c: (c not in score, -score.get(c, 0.0)))


def _node_dict(n: NodeError, keep: set[str]) -> dict[str, Any]:
    d = asdict(n)
    d["kept"] = n.node in keep
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def doctor_case(hs: HarnessSession, case: AccuracyCase, options: DoctorOptions,
                progress: Callable[[str], None] = lambda _: None) -> DoctorRow:
    """Diagnose one case and search for its fix; write and return its row (an error row, then re-raised, when
    something breaks)."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + 60.0 * options.max_minutes
    spec0, recipe = hs.model(case.model), hs.recipe(case.recipe)
    backend = get_backend(case.backend)
    row = DoctorRow(id=case.id, model=case.model, backend=backend.name, recipe=recipe.name, profile=case.profile,
                    recipe_kind=recipe.kind, backend_version=backend.version(), max_minutes=options.max_minutes)

    def say(text: str) -> None:
        progress(f"doctor {case.id}: {text}")

    try:
        if recipe.kind not in KINDS:
            raise HarnessError(f"the doctor keeps nodes of fp16 and int8 recipes in FP32; recipe {recipe.name!r} is "
                               f"{recipe.kind}" + (" (ONNX Runtime CPU, which the doctor compares node by node on, "
                                                   "has no bfloat16 kernels)" if recipe.kind == "bf16" else ""))
        if case.profile not in spec0.profiles:
            raise HarnessError(f"model {spec0.name!r} has no profile {case.profile!r} (it has "
                               f"{', '.join(spec0.profiles)})")
        reason = hs.skip_reason(case.model, backend.name, recipe.name)
        if reason:
            raise HarnessError(f"cannot run {case.id} here: {reason}")
        spec, _ = hs.layout(spec0)
        profile = spec.profiles[case.profile]
        budgets = ([_budget(t) for t in options.budgets] if options.budgets
                   else case_expectation(hs, case).budgets)
        if not budgets:
            raise HarnessError(f"no budget applies to {case.id}: there is nothing to fix (give --budget)")
        row.budget_labels = [b.label for b in budgets]
        samples = SampleSet(spec, profile, size=hs.settings.eval_size)
        ref = reference_outputs(hs.cache, spec, samples, device=hs.settings.reference_device)
        gate = Gate(hs, spec, profile, backend, budgets, samples, ref)
        row.eval_samples = samples.count
        say(f"gating {recipe.name} on {samples.count} samples")
        before = gate(recipe)
        row.gate_before = before.to_dict()
        say(f"before: {'PASS' if before.passed else 'fail'} ({before.describe()})")
        art, _ = gate.engine(recipe)
        comp = _compare(hs, spec, profile, art, options, deadline, say)
        _diagnosis(row, comp, budgets, options.top)
        if before.passed:
            row.update(status="passes", reason="the gate passes already: nothing to fix")
        else:
            _fix(row, hs, gate, recipe, art, comp, options, deadline, say)
    except Exception as exc:
        row.update(status="error", message=f"{type(exc).__name__}: {exc}", seconds=round(time.perf_counter() - t0, 3))
        hs.write_row(row)
        raise
    row.seconds = round(time.perf_counter() - t0, 3)
    hs.write_row(row)
    say(f"{row.status} in {row.seconds:.0f} s" + (f": {row.reason}" if row.reason else ""))
    return row


def _compare(hs: HarnessSession, spec: Any, profile: Any, art: Any, options: DoctorOptions, deadline: float,
             say: Callable[[str], None]) -> Comparison:
    few = SampleSet(spec, profile, size=options.samples)
    unit = max(1, few.min_batch)  # one sample per run where the profile admits batch 1
    feeds = [b.feeds for b in few.batches(unit)]
    return cached_comparison(hs.cache, f"{spec.name}/{art.recipe.name}-nodes", spec.path, art.path, art.model_hash,
                             few.key(), feeds, chunk=options.chunk, deadline=deadline, progress=say)


def _diagnosis(row: DoctorRow, comp: Comparison, budgets: list[Budget], top: int) -> None:
    scale, source = error_scale(budgets)
    row.update(scale=scale, scale_source=source, samples=comp.samples, nodes_compared=len(comp.nodes))
    row.compare = {"chunk": comp.chunk, "chunks": comp.chunks, "seconds": comp.seconds,
                   "held_peak_mb": round(comp.held_peak_bytes / 2**20, 2),
                   "rss_peak_mb": round(comp.rss_peak_mb, 1) if comp.rss_peak_mb else None,
                   "unmatched": comp.unmatched, "complete": comp.complete, "cached": comp.cached,
                   "notes": comp.notes}
    first = next((n for n in comp.nodes if not n.cumulative <= scale), None)
    row.first_over = _node_dict(first, set()) if first else None
    row.nodes = node_rows(comp, first, top, [])


def node_rows(comp: Comparison, first: NodeError | None, top: int, keep: list[str]) -> list[dict[str, Any]]:
    """The table's nodes, in graph order: the ``top`` most sensitive, the first over the scale, those kept."""
    shown = sorted(comp.nodes, key=lambda n: -n.sensitivity)[:top]
    shown += [n for n in comp.nodes if (n is first or n.node in keep) and n not in shown]
    return [_node_dict(n, set(keep)) for n in sorted(shown, key=lambda n: n.order)]


def _fix(row: DoctorRow, hs: HarnessSession, gate: Gate, recipe: Any, art: Any, comp: Comparison,
         options: DoctorOptions, deadline: float, say: Callable[[str], None]) -> None:
    candidates = converted_nodes(art.info)
    if recipe.kind != "int8":  # keep_fp32 names nodes of the source model; folding adds nodes it lacks
        import onnx

        labels = {node_label(n) for n in walk_nodes(onnx.load(str(gate.spec.path)).graph)}
        candidates = [c for c in candidates if c in labels]
    row.candidates = len(candidates)
    ranked = ranked_candidates(candidates, comp)
    say(f"searching {len(ranked)} candidate nodes (most sensitive: {', '.join(ranked[:3])})")

    def evaluate(keep: list[str]) -> GateResult:
        digest = hashlib.sha256("\n".join(sorted(keep)).encode()).hexdigest()[:8]
        return gate(with_keep(recipe, keep, f"{recipe.name}-keep{len(keep)}-{digest}"))

    found = Search(ranked, evaluate, deadline=deadline, progress=say).run()
    row.search = [s.to_dict() for s in found.steps]
    row.update(reason=found.reason or None, out_of_time=found.out_of_time)
    if found.keep is None:
        row.status = "no fix"
        return
    keep = found.keep
    fixed = with_keep(recipe, keep, f"{gate.spec.name}-{recipe.name}-doctor")
    text = recipe_toml(fixed, [])
    say(f"re-gating the recipe as written ({len(keep)} node(s) kept in FP32)")
    after = gate(recipe_from_toml(text, "the doctor's recipe"))
    row.gate_after = after.to_dict()
    if not after.passed:  # the search's own gate passed: the recipe as written must too
        row.update(status="no fix", reason=f"the recipe as written failed its re-gate: {after.describe()}")
        return
    if recipe.kind == "int8":
        import onnx

        from ..recipes.int8 import reads_dequantized

        fixed_art, _ = gate.engine(recipe_from_toml(text, "the doctor's recipe"))  # cached by the re-gate
        kept = (fixed_art.info.get("keep_fp32") or {}).get("nodes") or keep
        row.kept_read_dequantized = reads_dequantized(onnx.load(str(fixed_art.path)), kept)
    say("pricing: serial throughput of the fixed recipe, the failing one and fp32")
    roles = {"fixed": recipe_from_toml(text, "the doctor's recipe"), "failing": recipe, "fp32": hs.recipe("fp32")}
    row.price = serial_price(gate, roles, seconds=options.price_seconds)
    row.toml = recipe_toml(fixed, _comments(row, keep, len(candidates), before=row.gate_before, after=after))
    path = toml_path(hs.settings.report_dir, row.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(row.toml)
    row.update(status="fixed", keep_fp32=keep, fixed_recipe=fixed.name, toml_path=str(path))
    first = next((n for n in comp.nodes if row.first_over and n.node == row.first_over["node"]), None)
    row.nodes = node_rows(comp, first, options.top, keep)


def _comments(row: DoctorRow, keep: list[str], candidates: int, *, before: dict[str, Any],
              after: GateResult) -> list[str]:
    tp = row.price.get("throughput", {})
    price = ", ".join(f"{role} {tp[role]:.4g}" for role in ("fixed", "failing", "fp32") if tp.get(role))
    kind = "quantized" if row.recipe_kind == "int8" else "converted"
    return [f"precision doctor: {row.model}, recipe {row.recipe} on {row.backend} (profile {row.profile})",
            f"keeps {len(keep)} of the {candidates} nodes the recipe {kind} in FP32",
            *([f"{len(row.kept_read_dequantized)} of them still read an input quantized for other readers (ONNX "
               f"Runtime quantizes a tensor once for all its readers): {', '.join(row.kept_read_dequantized)}"]
              if row.kept_read_dequantized else []),
            f"before: {GateResult(**{**before, 'cached': False}).describe()}",
            f"after ({row.eval_samples} samples, re-gated as written): {after.describe()}",
            f"serial samples/s at batch {row.price.get('batch')}: {price}",
            f"to gate it, add \"{row.model}-{row.recipe}-doctor\" to [models.{row.model}] recipes"]


def failed_cases(rows: list[Any]) -> list[AccuracyCase]:
    """The accuracy cases of a run whose gate failed, known failures included (a failed gate either way),
    unexpected failures first, each case once whatever the devices it failed on."""
    failed = [r for r in rows if isinstance(r, AccuracyRow) and r.status in ("fail", "known failure")]
    failed.sort(key=lambda r: (r.status != "fail", r.label))
    # a case failed on several GPUs is one case to the doctor, which runs on the controller's device
    cases = {(r.model, r.backend, r.recipe, r.profile): None for r in failed}
    return [AccuracyCase(*c) for c in cases]


def doctor_session(hs: HarnessSession, rows: list[Any], options: DoctorOptions,
                   progress: Callable[[str], None]) -> list[DoctorRow]:
    """``pytest --doctor``: the doctor on each failed case of the run, sharing the time budget (each case gets
    what is left divided by the cases left)."""
    cases = failed_cases(rows)
    end = time.monotonic() + 60.0 * options.max_minutes
    out = []
    for i, case in enumerate(cases):
        left = (end - time.monotonic()) / 60.0
        if left <= 0:
            progress(f"doctor: time budget spent; {len(cases) - i} failed case(s) not examined")
            break
        share = DoctorOptions(**{**asdict(options), "max_minutes": left / (len(cases) - i)})
        try:
            out.append(doctor_case(hs, case, share, progress))
        except Exception as exc:  # recorded in its row; the next case still gets its turn
            progress(f"doctor {case.id}: error: {type(exc).__name__}: {exc}")
            if isinstance(hs.last_row, DoctorRow) and hs.last_row.id == case.id:
                out.append(hs.last_row)
    return out


def session_lines(hs: HarnessSession, progress: Callable[[str], None]) -> list[str]:
    """``pytest --doctor`` at the end of a session: the doctor on the run's failed cases; the summary's lines."""
    from ..results import run_rows
    from .report import terminal_lines

    # the price is timed as the perf cases are (--perf-duration seconds each)
    options = DoctorOptions(samples=hs.settings.doctor_samples, max_minutes=hs.settings.doctor_max_minutes,
                            price_seconds=hs.settings.perf.duration)
    rows = run_rows(hs.settings.report_dir, hs.run_id, problems=[])
    found = doctor_session(hs, rows, options, progress)
    if not found:
        return ["doctor: no accuracy case failed: nothing to examine"]
    return terminal_lines(found)


def toml_path(report_dir: Path, case_id: str) -> Path:
    """Where the recipe found for a case is written."""
    return report_dir / FOLDER / f"{case_id}.toml"

"""The shared check functions behind the gate tests' thin fixtures.

``check_accuracy`` runs one case end to end (recipe -> engine -> samples -> reference -> metrics ->
budgets), writes its result row (:class:`harness.rows.AccuracyRow`) whatever happens, and raises
:class:`AccuracyGateFailure` with the numbers when a budget does not hold. ``check_build`` writes a
:class:`harness.rows.BuildRow`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from .accuracy import METRICS, AccuracyAccumulator, OutputSummary, Verdict, evaluate, failure_message
from .backends import get_backend
from .data import SampleSet, batch_size_of, unpad
from .errors import HarnessError, ModeUnsupported
from .recipes import apply_recipe
from .reference import reference_outputs
from .report import REPORT
from .rows import AccuracyRow, BudgetValue, BuildRow, split_budget_label
from .session import AccuracyCase, HarnessSession


class AccuracyGateFailure(AssertionError):
    """A budget did not hold; the message shows the statistics and the worst samples."""


def summary_fields(summaries: Mapping[str, OutputSummary]) -> dict[str, Any]:
    """Flat metrics (the worst output's, per statistic) and per-output details for a row."""
    flat: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    for name, s in summaries.items():
        detail: dict[str, Any] = {"nonfinite_samples": s.nonfinite_samples, "nan": s.nan_elements,
                                  "inf": s.inf_elements}
        for metric, st in s.stats.items():
            worse = max if METRICS[metric] == "lower" else min
            vals = {stat: st.stat(stat) for stat in ("mean", "p50", "p90", "p99", "max", "min")}
            for thr in st.thresholds:
                vals[f"share_over_{thr:g}"] = st.share_over(thr)
            detail[metric] = {k: _finite_or_none(v) for k, v in vals.items()}
            for stat, v in vals.items():
                key = f"{metric}.{stat}"
                if stat.startswith("share_over"):
                    flat[key] = max(flat.get(key, -math.inf), v)
                elif not math.isnan(v):
                    flat[key] = worse(flat[key], v) if key in flat else v
        detail["worst"] = {m: [[i, v] for v, i in w] for m, w in s.worst.items() if m in ("rel_l2", "top1")}
        outputs[name] = detail
    return {"metrics": {k: _finite_or_none(v) for k, v in flat.items()}, "outputs": outputs}


def _finite_or_none(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def verdict_fields(verdict: Verdict) -> dict[str, Any]:
    budgets = []
    for r in verdict.results:
        statistic, op, _ = split_budget_label(r.budget.label)
        budgets.append(BudgetValue(budget=r.budget.label, output=r.output, value=_finite_or_none(r.value),
                                   passed=r.passed, statistic=statistic, op=op or r.budget.op,
                                   bound=float(r.budget.bound)))
    return {"budgets": budgets, "nonfinite_samples": sum(s.nonfinite_samples for s in verdict.nonfinite.values())}


def check_accuracy(hs: HarnessSession, case: AccuracyCase) -> AccuracyRow:
    """Run one accuracy case; return its row, or raise AccuracyGateFailure / HarnessError."""
    __tracebackhide__ = True
    spec = hs.model(case.model)
    recipe = hs.recipe(case.recipe)
    if case.profile not in spec.profiles:
        raise HarnessError(f"model {spec.name!r} has no profile {case.profile!r} (it has {', '.join(spec.profiles)})")
    profile = spec.profiles[case.profile]
    backend = get_backend(case.backend)
    # every key field is set before anything can fail, so that an error row and a later good row of the
    # same case replace each other in results.json
    row = AccuracyRow(
        id=case.id, model=spec.name, backend=backend.name, recipe=recipe.name, profile=profile.name,
        batch=batch_size_of(spec, profile), recipe_kind=recipe.kind, recipe_params=recipe.options,
        profile_shapes=profile.describe(), backend_version=backend.version(),
    )
    t0 = time.perf_counter()
    try:
        # the samples' shapes are checked against the profile before anything is built or run
        samples = SampleSet(spec, profile, size=hs.settings.eval_size)
        samples.check_profile()
        row.update(samples=samples.count, data="real" if samples.real else "generated")
        art = apply_recipe(recipe, spec, hs.cache)
        row.update(recipe_info=art.info, recipe_seconds=round(art.seconds, 3), recipe_hit=art.hit)
        label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
        engine = backend.build(art.path, profile, hs.cache, label=label, model_hash=art.model_hash,
                               options=hs.build_options(backend, art.build_options), calibration=art.calibration)
        row.update(build_seconds=round(engine.entry.build_seconds, 3), engine_size=engine.entry.size,
                   cache_hit=engine.entry.hit, engine_key=engine.entry.key)
        ref = reference_outputs(hs.cache, spec, samples, device=hs.settings.reference_device)
        row.setup_seconds = round(time.perf_counter() - t0, 3)
        budgets = spec.budgets_for(recipe.name, recipe.kind)
        acc = AccuracyAccumulator(spec.outputs, budgets, batch_axes=spec.output_batch_axes)
        with engine.runner() as runner:
            row.runner = runner.describe()
            for batch in samples.batches():
                out = unpad(runner.infer(batch.feeds), batch.count, spec.output_batch_axes)
                acc.update(out, ref.slice(batch.index, batch.index + batch.count), batch.index)
    except ModeUnsupported as exc:
        row.update(status="skipped", message=str(exc))
        hs.write_row(row)
        raise
    except Exception as exc:  # whatever broke, the row says so before the test reports it
        row.update(status="error", message=f"{type(exc).__name__}: {exc}")
        hs.write_row(row)
        raise
    summaries = acc.summary()
    verdict = evaluate(summaries, budgets)
    row.update(summary_fields(summaries))
    row.update(verdict_fields(verdict))
    row.seconds = round(time.perf_counter() - t0, 3)
    known = spec.known_failures.get(recipe.name)
    if not budgets and verdict.passed:
        row.status = "unbudgeted"
    elif verdict.passed:
        row.status = "pass"
    else:
        row.status = "known failure" if known else "fail"
    row.known_failure = known
    message = None
    if not verdict.passed:
        message = failure_message(verdict, summaries, case=case.id, samples=samples.count,
                                  report=str(hs.settings.report_dir / REPORT))
        row.message = message
    hs.write_row(row)
    if message:
        raise AccuracyGateFailure(message)
    return row


def check_build(hs: HarnessSession, case: AccuracyCase) -> BuildRow:
    """Build one case's engine (recipe first), cache it, record what it took; run nothing."""
    spec = hs.model(case.model)
    recipe = hs.recipe(case.recipe)
    profile = spec.profiles[case.profile]
    backend = get_backend(case.backend)
    row = BuildRow(id=case.id, model=spec.name, backend=backend.name, recipe=recipe.name, profile=profile.name,
                   recipe_kind=recipe.kind, backend_version=backend.version())
    try:
        art = apply_recipe(recipe, spec, hs.cache)
        label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
        engine = backend.build(art.path, profile, hs.cache, label=label, model_hash=art.model_hash,
                               options=hs.build_options(backend, art.build_options), calibration=art.calibration)
    except ModeUnsupported as exc:
        row.update(status="skipped", message=str(exc))
        hs.write_row(row)
        raise
    except Exception as exc:
        row.update(status="error", message=f"{type(exc).__name__}: {exc}")
        hs.write_row(row)
        raise
    row.update(status="pass", build_seconds=round(engine.entry.build_seconds, 3), engine_size=engine.entry.size,
               cache_hit=engine.entry.hit, engine_key=engine.entry.key, engine_info=engine.entry.info,
               recipe_info=art.info)
    hs.write_row(row)
    return row

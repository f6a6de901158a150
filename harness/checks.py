"""The shared check functions behind the gate tests' thin fixtures.

``check_accuracy`` runs one case end to end (output layout -> recipe -> engine -> samples -> reference ->
metrics -> budgets), writes its result row (:class:`harness.rows.AccuracyRow`) whatever happens, and raises
:class:`AccuracyGateFailure` with the numbers when a budget does not hold. ``check_build`` writes a
:class:`harness.rows.BuildRow`. An accuracy row's status is one of ``pass``, ``fail``, ``error``, ``known
failure``, ``skipped``, ``unbudgeted`` (no budget applies: a failure under ``--strict-budgets``) and
``no-op`` (the recipe converted or quantized nothing, so the case says nothing about its precision; raised
as :class:`NoOpRecipe`, which the plugin reports as a skip with the reason).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .accuracy import (
    AccuracyAccumulator,
    OutputSummary,
    Verdict,
    evaluate,
    failure_message,
    fmt,
    share_key,
    stat_value,
)
from .backends import get_backend
from .budgets import METRICS, Budget, share_stat, tail_stats
from .cpu_features import int8_kernels, saturating_int8
from .data import batch_size_of, unpad
from .errors import HarnessError
from .recipes import apply_recipe
from .reference import reference_outputs, simulated_outputs
from .report import REPORT
from .rows import AccuracyRow, BudgetValue, BuildRow, split_budget_label
from .session import AccuracyCase, HarnessSession
from .shape_cases import point_samples
from .spec import Expectation


class AccuracyGateFailure(AssertionError):
    """A budget did not hold; the message shows the statistics and the worst samples."""


class NoOpRecipe(Exception):
    """The recipe changed nothing (the message says why): the case is no pass of that precision."""


def summary_fields(summaries: Mapping[str, OutputSummary], budgets: Iterable[Budget] = ()) -> dict[str, Any]:
    """Flat metrics (the worst output's, per statistic) and per-output details for a row.

    Per metric: the tail that matters for it (``tail_stats``: mean, p50, p90, p99, max of an error; mean,
    min, p1, p5, p10, p50 of cosine and agreement), any other percentile a budget names, and the share of
    samples on the bad side of each tracked threshold (``share_over_T`` of an error, ``share_under_T`` of
    the others)."""
    named: dict[str, set[str]] = {}
    for b in budgets:
        if b.threshold is None:
            named.setdefault(b.metric, set()).add(b.stat)
    flat: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    for name, s in summaries.items():
        detail: dict[str, Any] = {"nonfinite_samples": s.nonfinite_samples, "nan": s.nan_elements,
                                  "inf": s.inf_elements}
        for metric, st in s.stats.items():
            worse = max if METRICS[metric].better == "lower" else min
            stats = tail_stats(metric)
            stats += tuple(sorted(named.get(metric, set()) - set(stats)))
            vals = {stat: stat_value(st, stat) for stat in stats}
            share = share_stat(metric)
            for thr in st.thresholds:
                vals[share_key(share, thr)] = getattr(st, share)(thr)
            detail[metric] = {k: _finite_or_none(v) for k, v in vals.items()}
            for stat, v in vals.items():
                key = f"{metric}.{stat}"
                if stat.startswith("share_"):  # the share of bad samples: the worst output's is the largest
                    flat[key] = max(flat.get(key, -math.inf), v)
                elif not math.isnan(v):
                    flat[key] = worse(flat[key], v) if key in flat else v
        detail["worst"] = {m: [[i, v] for v, i in w] for m, w in s.worst.items() if m in ("rel_l2", "top1")}
        outputs[name] = detail
    return {"metrics": {k: _finite_or_none(v) for k, v in flat.items()}, "outputs": outputs}


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def verdict_fields(verdict: Verdict) -> dict[str, Any]:
    budgets = []
    for r in verdict.results:
        statistic, op, _ = split_budget_label(r.budget.label)
        budgets.append(BudgetValue(budget=r.budget.label, output=r.output, value=_finite_or_none(r.value),
                                   passed=r.passed, statistic=statistic, op=op or r.budget.op,
                                   bound=float(r.budget.bound),
                                   fp32=_finite_or_none(r.fp32) if r.budget.relative else None))
    return {"budgets": budgets, "nonfinite_samples": sum(s.nonfinite_samples for s in verdict.nonfinite.values())}


def case_expectation(hs: HarnessSession, case: AccuracyCase) -> Expectation:
    """The budgets and known failure of a case, with the registry's scopes for its backend and device applied."""
    recipe = hs.recipe(case.recipe)
    backend = get_backend(case.backend)
    return hs.model(case.model).expectation(recipe.name, recipe.kind, backend.name, backend.device_words())


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
        profile_shapes=profile.describe(), backend_version=backend.version(), shape=case.shape,
    )
    t0 = time.perf_counter()
    notes: list[str] = []
    try:
        # the samples' shapes (at the case's point of the profile) are checked before anything is built or run
        samples = point_samples(spec, profile, case.shape, hs.settings.eval_size, row, notes)
        row.update(samples=samples.count, data="real" if samples.real else "generated")
        # outputs are split into samples along their real batch axes, found by running the FP32 model
        spec, layout = hs.layout(spec)
        row.output_layout = layout.describe()
        notes += layout.warnings
        art = apply_recipe(recipe, spec, hs.cache)
        row.update(recipe_info=row_info(art.info), recipe_seconds=round(art.seconds, 3), recipe_hit=art.hit)
        label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
        engine = backend.build(art.path, profile, hs.cache, label=label, model_hash=art.model_hash,
                               options=hs.build_options(backend, art.build_options), calibration=art.calibration)
        row.update(build_seconds=round(engine.entry.build_seconds, 3), engine_size=engine.entry.size,
                   cache_hit=engine.entry.hit, engine_key=engine.entry.key, setup=engine.describe())
        ref = reference_outputs(hs.cache, spec, samples, device=hs.settings.reference_device)
        row.setup_seconds = round(time.perf_counter() - t0, 3)
        expect = case_expectation(hs, case)
        budgets = expect.budgets
        row.expectation_scopes = list(expect.scopes)
        row.budget_source = expect.source or "none"
        acc = AccuracyAccumulator(spec.outputs, budgets, batch_axes=spec.output_batch_axes)
        sim = None
        if recipe.kind == "int8":
            sim = simulated_outputs(hs.cache, spec, samples, artifact=art.path, artifact_hash=art.model_hash,
                                    recipe=recipe.name)
            sim_acc = AccuracyAccumulator(spec.outputs, batch_axes=spec.output_batch_axes)
            kernel_acc = AccuracyAccumulator(spec.outputs, batch_axes=spec.output_batch_axes)
        with engine.runner() as runner:
            row.runner = runner.describe()
            for batch in samples.batches(fill=True):
                out = unpad(runner.infer(batch.feeds), batch.count, spec.output_batch_axes)
                expected = ref.slice(batch.index, batch.index + batch.count)
                labels = samples.labels(batch.index, batch.index + batch.count) if samples.labelled else None
                acc.update(out, expected, batch.index, labels)
                if sim is not None:
                    defined = sim.slice(batch.index, batch.index + batch.count)
                    sim_acc.update(defined, expected, batch.index)
                    kernel_acc.update(out, defined, batch.index)
    except Exception as exc:  # whatever broke, the row says so before the test reports it
        hs.write_failure(row, exc)
        raise
    summaries = acc.summary()
    verdict = evaluate(summaries, budgets)
    row.update(summary_fields(summaries, budgets))
    row.update(verdict_fields(verdict))
    if acc.labelled:  # the FP32 reference's own scores against the labels
        fp32 = {name: OutputSummary(name, s.fp32_stats) for name, s in summaries.items() if s.fp32_stats}
        row.fp32_label_metrics = summary_fields(fp32, budgets)["metrics"]
    if sim is not None:
        row.simulated = summary_fields(sim_acc.summary())["metrics"]
        row.kernel_error = summary_fields(kernel_acc.summary())["metrics"]
        notes += int8_notes(backend.name, backend.device_words(), row.metrics, row.simulated, row.kernel_error)
        row.kernel_dominated = kernels_dominate(row.simulated, row.kernel_error)
    row.notes = notes
    row.seconds = round(time.perf_counter() - t0, 3)
    known = expect.known_failure
    no_op = art.info.get("no_op")
    message = None
    if not verdict.passed:
        row.status = "known failure" if known else "fail"
        message = failure_message(verdict, summaries, case=case.id, samples=samples.count,
                                  report=str(hs.settings.report_dir / REPORT))
    elif no_op:
        row.update(status="no-op", no_op=no_op, message=f"no-op: {no_op}")
    elif not budgets:
        row.unbudgeted = True
        row.status = "unbudgeted"
        if hs.settings.strict_budgets:
            row.status = "fail"
            message = (f"accuracy gate for {case.id}: no budget applies to recipe {recipe.name!r} (kind "
                       f"{recipe.kind}) of model {spec.name!r}, and --strict-budgets makes that a failure; give it "
                       f"budgets in {spec.source} ([models.{spec.name}.budgets] or [defaults.budgets])")
    else:
        row.status = "pass"
    row.known_failure = known
    if message:
        if notes:
            message += "".join(f"\n  note: {n}" for n in notes)
        row.message = message
    hs.write_row(row)
    if message:
        raise AccuracyGateFailure(message)
    if no_op:
        raise NoOpRecipe(f"{case.id}: no-op: {no_op}")
    return row


def row_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's record for a result row: the per-node lists stay in the cache entry (the API returns them)."""
    return {k: v for k, v in info.items() if k != "nodes"}


# below this, a kernel's difference from the recipe's own arithmetic is noise (float summation order)
_KERNEL_FLOOR = 1e-3


def kernels_dominate(simulated: Mapping[str, Any], kernel: Mapping[str, Any]) -> bool:
    """Whether a backend's int8 kernels move the outputs further from the recipe's own (simulated) outputs than
    the quantization moves those from FP32: most of the error is then the kernels', not the recipe's."""
    sim, ker = simulated.get("rel_l2.mean"), kernel.get("rel_l2.mean")
    return sim is not None and ker is not None and ker > _KERNEL_FLOOR and ker > sim


def int8_notes(backend: str, words: set[str], metrics: Mapping[str, Any], simulated: Mapping[str, Any],
               kernel: Mapping[str, Any]) -> list[str]:
    """What to tell a user about an int8 case: whether the kernels or the quantization dominate, and why."""
    notes = []
    total, sim, ker = (m.get("rel_l2.mean") for m in (metrics, simulated, kernel))
    if kernels_dominate(simulated, kernel):
        notes.append(f"most of this error is the backend's int8 kernels', not the quantization's: the artifact as "
                     f"its ONNX defines it (Q/DQ simulated in float) has rel_l2 mean {fmt(sim)}, {backend} has "
                     f"{fmt(total)}, and {backend} differs from the simulated outputs by {fmt(ker)}")
    if backend == "ort_cpu" and saturating_int8(words):
        notes.append(f"ONNX Runtime's int8 kernels on this CPU ({int8_kernels(words)}) add u8 x s8 products "
                     "pairwise into 16 bits, which saturates with large weights (per-channel ones most): give the "
                     "recipe reduce_range = true (7-bit weights), run on a CPU with AVX512-VNNI, AVX-VNNI or AMX, "
                     "or scope this case's expectation to such CPUs in the registry ([[models.NAME.where]] with "
                     "device = \"x86 and not vnni\")")
    return notes


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
    except Exception as exc:
        hs.write_failure(row, exc)
        raise
    row.update(status="pass", build_seconds=round(engine.entry.build_seconds, 3), engine_size=engine.entry.size,
               cache_hit=engine.entry.hit, engine_key=engine.entry.key, engine_info=engine.entry.info,
               setup=engine.describe(), recipe_info=row_info(art.info))
    hs.write_row(row)
    return row

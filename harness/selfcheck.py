"""What batch consistency and determinism share: their cases, the engine under test, and comparing an engine's
outputs with its own.

Both gates compare outputs the engine gave for the *same* sample in two situations where nothing about the
computation should change (another batch position or size; another build, run or runner). Each such pair is
one *comparison*, fed to the accuracy accumulator as if it were a sample, so that every statistic and budget
of the accuracy gates applies; the bounds come from the registry (``[defaults.consistency]``,
``[models.NAME.determinism]``...: :data:`harness.budgets.DEFAULT_CHECK_BOUNDS`). A comparison's index maps to
its description ("sample #3 at position 5 of a batch of 8, among others"), which the failure message and the
row's ``worst`` use.

Cases: every selected model x backend x profile, for the recipes the perf sweep times (``[defaults]
perf_recipes``, one per precision: calibration changes the numbers, not whether the kernels depend on the batch
or the build), or those ``--recipes`` names. Ids read ``test_consistency[classifier-ort_cpu-fp16-dynamic]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .accuracy import AccuracyAccumulator, evaluate, fmt
from .backends import Engine, get_backend
from .budgets import METRICS, Budget
from .cache import Cache
from .checks import summary_fields, verdict_fields
from .errors import HarnessError
from .recipes import RecipeArtifact, apply_recipe
from .rows import SelfCheckRow
from .session import HarnessSession
from .spec import ModelSpec

WORST_SHOWN = 5


class SelfCheckFailure(AssertionError):
    """An engine's outputs for one sample differ between situations that should not change them."""


@dataclass(frozen=True)
class SelfCheckCase:
    model: str
    backend: str
    recipe: str
    profile: str
    check: str  # consistency or determinism

    @property
    def id(self) -> str:
        return f"{self.model}-{self.backend}-{self.recipe}-{self.profile}"


def selfcheck_cases(hs: HarnessSession, check: str) -> Iterator[SelfCheckCase]:
    for spec in hs.models():
        recipes = hs.model_recipes(spec, hs.settings.recipes)
        if not hs.settings.recipes and hs.registry.perf_recipes:
            recipes = [r for r in recipes if r in hs.registry.perf_recipes]
        for backend in hs.backends():
            for recipe in recipes:
                if not hs.runs_recipe(backend, recipe):
                    continue
                for profile in hs.model_profiles(spec, hs.settings.profiles):
                    yield SelfCheckCase(spec.name, backend, recipe, profile, check)


class Comparisons:
    """Outputs of one sample in two situations, compared batch by batch; each comparison described in words."""

    def __init__(self, spec: ModelSpec, budgets: list[Budget]):
        self.spec = spec
        self.budgets = budgets
        self.acc = AccuracyAccumulator(spec.outputs, budgets, batch_axes=spec.output_batch_axes)
        self.where: list[str] = []

    def add(self, candidate: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], where: list[str]) -> None:
        """``candidate`` and ``expected`` hold ``len(where)`` samples along each output's batch axis."""
        self.acc.update(candidate, expected, len(self.where))
        self.where += where

    def finish(self, what: str, label: str) -> tuple[dict[str, Any], str | None]:
        """The row fields of the comparisons (statistics, budgets, ``comparisons``, ``worst``) and the failure
        message naming ``what`` failed for ``label``, or None when every bound holds."""
        summaries = self.acc.summary()
        verdict = evaluate(summaries, self.budgets)
        fields: dict[str, Any] = {**summary_fields(summaries, self.budgets), **verdict_fields(verdict)}
        fields["comparisons"] = len(self.where)
        worst: list[tuple[float, str, int]] = []
        for name, s in summaries.items():
            worst += [(v, name, i) for v, i in s.worst.get("rel_l2", [])]
        worst.sort(key=lambda t: -t[0])
        fields["worst"] = [{"where": self.where[i], "output": name, "rel_l2": float(v)}
                           for v, name, i in worst[:WORST_SHOWN] if v > 0]
        if verdict.passed:
            return fields, None
        lines = [f"{what} failed for {label} over {len(self.where)} compared sample outputs"]
        for out, s in verdict.nonfinite.items():
            lines.append(f"  output {out!r}: {s.nonfinite_samples} non-finite ({s.nan_elements} NaN, {s.inf_elements} "
                         f"Inf elements): {', '.join(self.where[i] for i in s.nonfinite_indices[:WORST_SHOWN])}")
        lines += [f"  {p}" for p in verdict.problems]
        for r in verdict.results:
            if r.passed:
                continue
            lines.append(f"  output {r.output!r}: {r.budget.label}: measured {fmt(r.value)}")
            sign = METRICS[r.budget.metric].better
            shown = summaries[r.output].worst.get(r.budget.metric, [])[:WORST_SHOWN]
            if shown:
                lines.append(f"    worst ({r.budget.metric}, {'highest' if sign == 'lower' else 'lowest'} first): "
                             + "; ".join(f"{self.where[i]}: {fmt(v)}" for v, i in shown))
        return fields, "\n".join(lines)


def build_engine(hs: HarnessSession, spec: ModelSpec, case: SelfCheckCase, cache: Cache | None = None
                 ) -> tuple[Engine, RecipeArtifact]:
    """The case's engine as the accuracy gates build it (from ``cache``: the run's own by default)."""
    recipe = hs.recipe(case.recipe)
    backend = get_backend(case.backend)
    profile = spec.profiles[case.profile]
    art = apply_recipe(recipe, spec, hs.cache)
    label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
    engine = backend.build(art.path, profile, cache or hs.cache, label=label, model_hash=art.model_hash,
                           options=hs.build_options(backend, art.build_options), calibration=art.calibration)
    return engine, art


def run_check(hs: HarnessSession, case: SelfCheckCase, body: Any) -> SelfCheckRow:
    """The scaffolding both checks share: the row with its case fields set before anything can fail, the bounds,
    the body (``body(spec, row, comparisons)`` returns what the check is called in messages), the verdict; the
    row is written whatever happens."""
    __tracebackhide__ = True
    spec = hs.model(case.model)
    recipe = hs.recipe(case.recipe)
    if case.profile not in spec.profiles:
        raise HarnessError(f"model {spec.name!r} has no profile {case.profile!r} (it has {', '.join(spec.profiles)})")
    backend = get_backend(case.backend)
    row = SelfCheckRow(id=case.id, model=spec.name, backend=backend.name, recipe=recipe.name, profile=case.profile,
                       check=case.check, recipe_kind=recipe.kind, backend_version=backend.version())
    t0 = time.perf_counter()
    try:
        spec, _ = hs.layout(spec)  # outputs split into samples along their real batch axes
        budgets, source = spec.check_budgets(case.check, recipe.name, recipe.kind)
        row.budget_source = source or "none"
        comparisons = Comparisons(spec, budgets)
        what = body(spec, row, comparisons)
    except Exception as exc:
        hs.write_failure(row, exc)
        raise
    fields, message = comparisons.finish(what, case.id)
    row.update(fields)
    row.seconds = round(time.perf_counter() - t0, 3)
    row.status = "fail" if message else "pass"
    row.message = message
    hs.write_row(row)
    if message:
        raise SelfCheckFailure(message)
    return row


def take(outputs: Mapping[str, np.ndarray], index: list[int], axes: Mapping[str, int | None]) -> dict[str, np.ndarray]:
    """The samples at ``index`` of a batch's outputs (along each output's batch axis; a shared output whole)."""
    out = {}
    for k, v in outputs.items():
        ax = axes.get(k, 0)
        out[k] = v if ax is None else np.take(v, index, axis=ax)
    return out


def concat(parts: list[dict[str, np.ndarray]], axes: Mapping[str, int | None]) -> dict[str, np.ndarray]:
    """Per-sample outputs (each with a batch axis of length 1 or more) joined along each output's batch axis."""
    out = {}
    for k in parts[0]:
        ax = axes.get(k, 0)
        out[k] = parts[0][k] if ax is None else np.concatenate([p[k] for p in parts], axis=ax)
    return out

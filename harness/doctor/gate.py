"""One gate evaluation of a recipe variant: its artifact (cached by the recipe cache), its engine on the case's
backend (cached by the engine cache), the whole evaluation set against the FP32 reference, the budgets. The
verdict is cached too (kind ``doctor``), keyed by the engine, the samples and the budgets, so a search run
again replays from the cache.

This is the accuracy gate without its row and known-failure policy (:func:`harness.checks.check_accuracy`
is the gate a test runs): the doctor asks only whether the budgets hold, and by how much.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..accuracy import AccuracyAccumulator, evaluate, fmt
from ..budgets import Budget
from ..data import SampleSet, unpad
from ..recipes import Recipe, RecipeWarning, apply_recipe
from ..reference import ReferenceOutputs
from ..spec import ModelSpec

GATE_VERSION = 1


@dataclass
class GateResult:
    passed: bool
    values: list[dict[str, Any]]  # per budget and output: budget, output, value, passed
    problems: list[str] = field(default_factory=list)
    nonfinite_samples: int = 0
    converted: int = 0  # nodes the artifact converts or quantizes
    seconds: float = 0.0
    cached: bool = False
    no_op: str | None = None

    def describe(self) -> str:
        """``mean(top1) 0.776 (>= 0.9) FAIL; p50(rel_l2) 0.26 (<= 0.4) ok``."""
        parts = [f"{v['budget']}{'[' + v['output'] + ']' if v.get('many') else ''}: {fmt(v['value'])}"
                 f" {'ok' if v['passed'] else 'FAIL'}" for v in self.values]
        if self.nonfinite_samples:
            parts.append(f"{self.nonfinite_samples} samples with NaN/Inf")
        parts += self.problems
        return "; ".join(parts) or "no budget"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "values": self.values, "problems": self.problems,
                "nonfinite_samples": self.nonfinite_samples, "converted": self.converted,
                "seconds": self.seconds, "no_op": self.no_op}


def converted_nodes(info: dict[str, Any]) -> list[str]:
    """The nodes a recipe converted (fp16 / bf16) or quantized (int8), by name, from its record."""
    nodes = info.get("nodes") or {}
    return list(nodes.get("converted") or nodes.get("quantized") or [])


class Gate:
    """Evaluates recipe variants of one case (model, profile, backend, budgets) on the full evaluation set."""

    def __init__(self, hs: Any, spec: ModelSpec, profile: Any, backend: Any, budgets: list[Budget],
                 samples: SampleSet, reference: ReferenceOutputs):
        self.hs, self.spec, self.profile, self.backend = hs, spec, profile, backend
        self.budgets, self.samples, self.reference = budgets, samples, reference

    def engine(self, recipe: Recipe) -> tuple[Any, Any]:
        """The recipe's artifact and its engine on the case's backend (both cached)."""
        with warnings.catch_warnings():  # a variant that keeps every node in FP32 is a no-op: expected here
            warnings.simplefilter("ignore", RecipeWarning)
            art = apply_recipe(recipe, self.spec, self.hs.cache)
        label = f"{self.spec.name}/{self.backend.name}/{recipe.name}-{self.profile.name}"
        engine = self.backend.build(art.path, self.profile, self.hs.cache, label=label, model_hash=art.model_hash,
                                    options=self.hs.build_options(self.backend, art.build_options),
                                    calibration=art.calibration)
        return art, engine

    def __call__(self, recipe: Recipe) -> GateResult:
        t0 = time.perf_counter()
        art, engine = self.engine(recipe)
        parts = {"engine": engine.entry.key, "artifact": art.model_hash, "samples": self.samples.key(),
                 "budgets": sorted(f"{b.label}|{b.where_computed}" for b in self.budgets),
                 "output_batch_axes": dict(sorted(self.spec.output_batch_axes.items())), "version": GATE_VERSION}
        fresh: list[GateResult] = []

        def build(path: Path) -> dict[str, Any]:
            result = self._run(engine)
            fresh.append(result)
            path.write_text(json.dumps(result.to_dict(), allow_nan=True))
            return {"passed": result.passed}

        label = f"{self.spec.name}/{self.backend.name}/gates-{self.profile.name}"
        entry = self.hs.cache.get_or_build("doctor", label, parts, "gate.json", build)
        if fresh:
            result = fresh[0]
        else:
            data = json.loads(entry.path.read_text())
            result = GateResult(**{k: v for k, v in data.items() if k != "seconds"}, cached=True)
        result.converted = len(converted_nodes(art.info))
        result.no_op = art.info.get("no_op")
        result.seconds = round(time.perf_counter() - t0, 3)
        return result

    def _run(self, engine: Any) -> GateResult:
        spec = self.spec
        acc = AccuracyAccumulator(spec.outputs, self.budgets, batch_axes=spec.output_batch_axes)
        with engine.runner() as runner:
            for batch in self.samples.batches():
                out = unpad(runner.infer(batch.feeds), batch.count, spec.output_batch_axes)
                expected = self.reference.slice(batch.index, batch.index + batch.count)
                labels = (self.samples.labels(batch.index, batch.index + batch.count)
                          if self.samples.labelled else None)
                acc.update(out, expected, batch.index, labels)
        verdict = evaluate(acc.summary(), self.budgets)
        many = len({r.output for r in verdict.results}) > 1
        values = [{"budget": r.budget.label, "output": r.output, "many": many and not r.budget.output,
                   "value": None if math.isnan(r.value) else float(r.value), "passed": bool(r.passed)}
                  for r in verdict.results]
        nonfinite = sum(s.nonfinite_samples for s in verdict.nonfinite.values())
        return GateResult(verdict.passed, values, list(verdict.problems), nonfinite)

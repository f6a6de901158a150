"""Accuracy under load: real evaluation inputs carried through a perf measurement, their outputs kept and checked.

A perf mode stages one batch per runner and times requests on it; nothing looked at the outputs. Engines fail
under load in ways a one-request accuracy gate never sees: execution contexts that share an optimization
profile or scratch memory, a stream synchronized too early, an output buffer another runner overwrites, a
backend that skips work. So, as MLPerf's TEST01 does (performance-mode outputs checked against accuracy-mode
outputs), every perf mode carries real inputs and checks a sample of its requests:

* each runner is staged with its own batch of evaluation samples (runner k the k-th batch: runners never
  carry the same inputs, so one answering with another's outputs shows);
* ``per_runner`` times during the measurement, spread over the stop rule's minimum duration, the runner's
  thread (in its own loop, between two timed requests, while the other runners keep running) issues one
  *checked request*: it stages the runner's next evaluation batch, runs it and copies its outputs to the host;
  the timed requests that follow carry that batch. Checked requests are left out of the latency record (their
  staging and copies would count otherwise) and out of the throughput (:attr:`LoadCheck.intervals` become the
  measurement's ``pauses``), and the time they take is recorded (``load_check.seconds``);
* after the measurement each evaluation batch is run once more on a fresh runner, alone, and every checked
  sample's outputs are compared with those, under the registry's determinism bounds (the same engine on the
  same input: :data:`harness.budgets.DEFAULT_CHECK_BOUNDS`). A mismatch fails the perf case, naming the worst
  samples, the runner and when in the run they were checked.

The row's ``load_check`` holds the requests and samples checked, the statistics and the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Engine, Runner
from .budgets import Budget
from .data import Batch, unpad
from .selfcheck import Comparisons
from .spec import ModelSpec

Call = tuple[Callable[..., object], tuple[Any, ...]]
PER_RUNNER = 4  # checked requests per runner (--perf-check-requests)


class LoadCheckFailure(AssertionError):
    """Outputs checked during a perf measurement differ from the same engine's outputs on the same inputs."""


@dataclass
class Checked:
    runner: int  # 0-based
    batch: int  # index into LoadCheck.batches
    at: float  # seconds into the measurement
    outputs: dict[str, np.ndarray]


class LoadCheck:
    """The checked requests of one perf measurement over ``runners`` runners (never shared between threads: each
    runner's entries are touched only by the thread that drives it; ``checked`` and ``intervals`` only grow,
    by atomic appends)."""

    def __init__(self, batches: list[Batch], runners: int, *, per_runner: int = PER_RUNNER, spread: float = 1.0,
                 resident: bool = True, clock: Callable[[], float] = time.perf_counter):
        if not batches:
            raise ValueError("a load check needs at least one evaluation batch")
        self.batches = batches
        self.runners = runners
        self.per_runner = per_runner
        # the checks fall within the first 80 % of the spread (the stop rule's minimum duration), leaving room for
        # requests that finish late
        self.interval = 0.8 * spread / (per_runner + 1) if per_runner else float("inf")
        self.resident = resident
        self.clock = clock
        self.current = [k % len(batches) for k in range(runners)]
        self.next_at = [float("inf")] * runners
        self.taken = [0] * runners
        self.spent = [0.0] * runners
        self.start = 0.0
        self.checked: list[Checked] = []
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each checked request this measurement
        self.limit = 8 * runners * per_runner  # checked requests kept over every measurement, at most

    def feeds(self, k: int) -> dict[str, np.ndarray]:
        """The batch runner ``k`` is staged with before the mode starts."""
        return self.batches[self.current[k]].feeds

    def begin(self, t0: float) -> None:
        """A measurement starts at ``t0``: the first checks fall an interval in, staggered across runners. Each
        measurement (a server case runs several) gets ``per_runner`` checks per runner, until ``limit`` checked
        requests are kept in all."""
        self.start = t0
        self.taken = [0] * self.runners
        self.intervals = []
        room = self.per_runner and len(self.checked) < self.limit
        # in place: a mode's loop may hold the list (ThreadPool compares each request's end with it)
        self.next_at[:] = [self._slot(k, 0) if room else float("inf") for k in range(self.runners)]

    def _slot(self, k: int, i: int) -> float:
        """When runner ``k``'s check number ``i`` (0-based) is due: evenly over the spread, staggered by runner."""
        return self.start + self.interval * (1 + i + k / max(1, self.runners))

    def due(self, k: int, t: float) -> bool:
        return t >= self.next_at[k]

    def take(self, k: int, runner: Runner) -> Call:
        """Run runner ``k``'s checked request on its next batch and keep the outputs; the call the mode times
        from now on (on ONNX Runtime CPU restaging binds new inputs)."""
        a = self.clock()
        nxt = (self.current[k] + max(1, self.runners)) % len(self.batches)
        runner.prepare(self.batches[nxt].feeds, resident=self.resident)
        self.current[k] = nxt
        runner.run()
        outputs = {name: np.array(v, copy=True) for name, v in runner.fetch_outputs().items()}
        self.checked.append(Checked(k, nxt, a - self.start, outputs))
        self.taken[k] += 1
        b = self.clock()
        self.spent[k] += b - a
        self.intervals.append((a, b))
        more = self.taken[k] < self.per_runner and len(self.checked) < self.limit
        # on a fixed schedule from the start (not from this check's end), so that the last falls inside the run
        self.next_at[k] = self._slot(k, self.taken[k]) if more else float("inf")
        return runner.timed_call()

    def pending(self) -> bool:
        """Whether a runner still has a checked request to make in this measurement."""
        return any(t != float("inf") for t in self.next_at)

    def pauses(self, share: float) -> list[tuple[float, float, float]]:
        """This measurement's checked requests as :attr:`harness.timing.Measurement.pauses`, each having taken
        ``share`` of the mode's capacity."""
        return [(a, b, share) for a, b in self.intervals]

    def verify(self, engine: Engine, spec: ModelSpec, budgets: list[Budget], label: str) -> tuple[dict[str, Any], str | None]:
        """Compare every checked sample with the engine's outputs on the same batch run alone on a fresh runner;
        the row's ``load_check`` and the failure message (None when every bound holds)."""
        axes = spec.output_batch_axes
        used = sorted({c.batch for c in self.checked})
        alone: dict[int, dict[str, np.ndarray]] = {}
        if used:
            with engine.runner() as runner:
                for j in used:
                    b = self.batches[j]
                    alone[j] = unpad(runner.infer(b.feeds), b.count, axes)
        comparisons = Comparisons(spec, budgets)
        for c in self.checked:
            b = self.batches[c.batch]
            comparisons.add(unpad(c.outputs, b.count, axes), alone[c.batch],
                            [f"sample #{b.index + i} (runner {c.runner + 1}, {c.at:.3g} s into the run)"
                             for i in range(b.count)])
        fields, message = comparisons.finish("accuracy under load", label) if self.checked else ({}, None)
        result: dict[str, Any] = {
            "requests": len(self.checked), "samples": fields.get("comparisons", 0), "passed": message is None,
            "seconds": round(sum(self.spent), 6), "compared_with": "the same engine, each batch run alone",
            "budgets": [{k: v for k, v in vars(b).items() if v is not None} for b in fields.get("budgets", [])],
            "rel_l2_max": fields.get("metrics", {}).get("rel_l2.max"),
            "worst": fields.get("worst", []),
        }
        return result, message


def load_batches(spec: ModelSpec, profile: Any, batch: int, count: int, eval_size: int | None = None) -> list[Batch]:
    """Up to ``count`` batches of ``batch`` evaluation samples at the profile's opt dimensions (real samples where
    the model has them; at most the evaluation set), each filled to exactly ``batch``; at least one."""
    from .data import SampleSet

    size = min(eval_size or spec.eval_size, max(batch, batch * count))
    samples = SampleSet(spec, profile, size=size)
    samples.check_profile(batch)
    return list(samples.batches(batch, fill=True))[:max(1, count)]


def load_check_for(hs: Any, spec: ModelSpec, profile: Any, batch: int, runners: int, resident: bool,
                   policy: Any) -> LoadCheck | None:
    """The load check of one perf measurement (None with ``--perf-check-requests 0``): a distinct evaluation
    batch for each runner and each of its checked requests, as many as the evaluation set holds (at most 16)."""
    per_runner = hs.settings.perf.check_requests
    if not per_runner:
        return None
    batches = load_batches(spec, profile, batch, min(16, runners * (per_runner + 1)), hs.settings.eval_size)
    return LoadCheck(batches, runners, per_runner=per_runner, spread=policy.min_duration, resident=resident)


def verify_load(hs: Any, check: LoadCheck | None, engine: Engine, spec: ModelSpec, recipe: Any,
                label: str) -> tuple[dict[str, Any], str | None]:
    """``check.verify`` under the model's determinism bounds for the recipe, on its outputs' real batch axes."""
    if check is None:
        return {}, None
    spec, _ = hs.layout(spec)
    budgets, _source = spec.check_budgets("determinism", recipe.name, recipe.kind)
    return check.verify(engine, spec, budgets, label)

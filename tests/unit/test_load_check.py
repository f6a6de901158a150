"""Accuracy under load (harness.load_check): checked requests in every mode, compared with the engine alone.

The runners are plain Python ones computing ``y = 2 x`` (one of them going wrong on purpose); what is under test
is which requests get checked, on which inputs, and what a mismatch reports, in each perf mode and in server mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from harness.backends.base import Engine, Runner, RunnerOptions
from harness.budgets import Budget, OutputConfig
from harness.data import Batch
from harness.load_check import LoadCheck
from harness.perf import MultiStream, Serial, ThreadPool
from harness.server import serve
from harness.spec import ModelSpec
from harness.timing import TimingPolicy


class DoublingRunner(Runner):
    """``y = 2 x`` on the staged batch; from its ``corrupt_after``-th run on, ``y = 2 x + 1`` (a runner whose
    outputs go wrong under load)."""

    input_names = ["x"]
    output_names = ["y"]

    def __init__(self, corrupt_after: int | None = None):
        self.corrupt_after = corrupt_after
        self.runs = 0
        self.x = np.zeros((1, 3), np.float32)
        self.y = self.x

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": 2 * np.asarray(feeds["x"])}

    def prepare(self, feeds: Mapping[str, np.ndarray], *, resident: bool = True) -> None:
        self.x = np.asarray(feeds["x"])

    def run(self) -> None:
        self.runs += 1
        bad = self.corrupt_after is not None and self.runs >= self.corrupt_after
        self.y = 2 * self.x + (1.0 if bad else 0.0)

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        return {"y": self.y}

    def submit(self) -> None:
        self.run()

    def wait(self) -> None:
        pass


class DoublingEngine(Engine):
    def runner(self, options: RunnerOptions | None = None) -> Runner:
        return DoublingRunner()


def spec() -> ModelSpec:
    return ModelSpec(name="doubler", path=None, source="test", inputs={}, outputs={"y": OutputConfig()},  # type: ignore[arg-type]
                     output_batch_axes={"y": 0}, profiles={}, budgets={})


def batches(n: int, size: int = 2) -> list[Batch]:
    rng = np.random.default_rng(0)
    return [Batch(i * size, size, {"x": rng.random((size, 3)).astype(np.float32) + 1}) for i in range(n)]


BOUND = [Budget.parse("max(rel_l2) <= 1e-6")]
POLICY = TimingPolicy(warmup=0.01, min_duration=0.2, min_iters=20)


def staged(check: LoadCheck, runners: list[DoublingRunner]) -> list[DoublingRunner]:
    for k, r in enumerate(runners):
        r.prepare(check.feeds(k))
    return runners


@pytest.mark.parametrize("mode", [Serial(), MultiStream(), ThreadPool()], ids=lambda m: m.name)
def test_every_mode_checks_requests_on_every_runner_and_a_healthy_engine_passes(mode):
    n = mode.runner_count(3)
    check = LoadCheck(batches(8), n, per_runner=3, spread=POLICY.min_duration)
    runners = staged(check, [DoublingRunner() for _ in range(n)])
    m = mode.measure(runners, POLICY, batch=2, check=check)
    assert m.iterations >= POLICY.min_iters
    assert sorted({c.runner for c in check.checked}) == list(range(n))
    assert all(sum(c.runner == k for c in check.checked) == 3 for k in range(n))
    # runners carry different batches, and each check moves its runner on to another
    assert len({c.batch for c in check.checked}) > 1
    result, message = check.verify(DoublingEngine(), spec(), BOUND, "doubler-case")
    assert message is None and result["passed"] and result["requests"] == 3 * n and result["samples"] == 6 * n
    assert result["rel_l2_max"] == 0.0 and result["seconds"] >= 0


class SlowDoublingRunner(DoublingRunner):
    """A runner whose requests take 90 ms: its thread reaches its checked requests late."""

    def run(self) -> None:
        time.sleep(0.09)
        super().run()


def test_the_thread_pool_waits_for_a_late_runners_checked_requests():
    # with a 0.2 s minimum the slow runner makes ~2 requests before the others have made enough: the measurement
    # must not stop before its three checked requests are made
    check = LoadCheck(batches(8), 2, per_runner=3, spread=POLICY.min_duration)
    runners = staged(check, [DoublingRunner(), SlowDoublingRunner()])
    m = ThreadPool().measure(runners, POLICY, batch=2, check=check)
    assert [sum(c.runner == k for c in check.checked) for k in range(2)] == [3, 3]
    assert m.wall > POLICY.min_duration and not check.pending()


def test_outputs_that_go_wrong_under_load_fail_naming_the_samples_the_runner_and_when():
    check = LoadCheck(batches(8), 2, per_runner=3, spread=POLICY.min_duration)
    runners = staged(check, [DoublingRunner(), DoublingRunner(corrupt_after=50)])
    ThreadPool().measure(runners, POLICY, batch=2, check=check)
    result, message = check.verify(DoublingEngine(), spec(), BOUND, "doubler-case")
    assert not result["passed"] and message is not None
    assert message.startswith("accuracy under load failed for doubler-case over 12 compared sample outputs")
    assert "max(rel_l2) <= 1e-6: measured" in message and "(runner 2, " in message and "(runner 1, " not in message
    assert result["worst"][0]["where"].startswith("sample #") and "s into the run" in result["worst"][0]["where"]


def test_the_server_mode_checks_requests_too():
    check = LoadCheck(batches(4), 2, per_runner=2, spread=0.2)
    runners = staged(check, [DoublingRunner(), DoublingRunner()])
    run = serve(runners, 2000.0, 0.3, batch=2, check=check)
    assert run.completed == run.count and len(check.checked) == 4
    result, message = check.verify(DoublingEngine(), spec(), BOUND, "doubler-case")
    assert message is None and result["samples"] == 8


class SlowCheckRunner(DoublingRunner):
    """1 ms per request; a checked request's copies back take 15 ms more (a large output)."""

    def run(self) -> None:
        time.sleep(0.001)
        super().run()

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        time.sleep(0.015)
        return super().fetch_outputs()


@pytest.mark.parametrize("mode,n", [(Serial(), 1), (MultiStream(), 2), (ThreadPool(), 2)],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_checked_requests_cost_the_throughput_nothing(mode, n):
    # four checks of 16 ms per runner in a 0.2 s window: counted, they would take a third of the throughput
    check = LoadCheck(batches(8), n, per_runner=4, spread=POLICY.min_duration)
    runners = staged(check, [SlowCheckRunner() for _ in range(n)])
    m = mode.measure(runners, POLICY, batch=2, check=check)
    assert len(check.checked) == 4 * n and sum(check.spent) > 0.05 * n
    # n requests in flight (multistream: the runners here work on submit, so a request's latency spans n runs)
    per_request = 2 * n / float(np.median(m.latencies))
    assert 0.8 < m.throughput / per_request < 1.2, (m.throughput, per_request, m.timed, check.spent)
    # serial times its pause from the last timed end to the next start: a little more than the check itself
    assert m.summary()["checked_s"] == pytest.approx(sum(check.spent) / (n if isinstance(mode, ThreadPool) else 1),
                                                     rel=0.05)


def test_no_checked_requests_with_zero_per_runner():
    check = LoadCheck(batches(2), 1, per_runner=0)
    runners = staged(check, [DoublingRunner()])
    Serial().measure(runners, POLICY, batch=2, check=check)
    result: dict[str, Any]
    result, message = check.verify(DoublingEngine(), spec(), BOUND, "x")
    assert not check.checked and message is None and result["requests"] == 0

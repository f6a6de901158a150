"""The interface every backend implements: ``Backend.build(...) -> Engine``, ``Engine.runner() -> Runner``.

A :class:`Runner` owns one execution context or session, one stream and its own buffers, and is never
shared between threads. Besides ``infer`` (host arrays in, host arrays out: what accuracy needs) it has
what the perf modes need:

``prepare(feeds, resident=...)``  stage one batch of inputs; with ``resident`` the inputs are copied to
                                  the device once and stay there, otherwise every iteration copies them.
``run()``                         one synchronous iteration on the prepared batch.
``submit()`` / ``wait()``         the same, split: start an iteration, then wait for it to finish.
                                  Backends without asynchronous execution raise ModeUnsupported.
``breakdown(n)``                  GPU runners: trtexec's per-iteration H2D / compute / D2H / enqueue times
                                  of ``n`` requests in a pass of their own (None elsewhere).

A backend that cannot do something says so by raising :class:`~harness.errors.ModeUnsupported` (or, for
the whole backend, :class:`~harness.errors.BackendUnavailable`); the test is skipped with that reason and a
mode is never silently replaced by another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..breakdown import Breakdown
from ..cache import Cache, Entry
from ..errors import ModeUnsupported
from ..profiles import Profile


@dataclass
class RunnerOptions:
    """Per-runner settings chosen by the caller (a perf mode or the accuracy check)."""

    threads: int | None = None  # host threads the runner may use (ORT CPU intra-op threads)
    cuda_graph: bool = False
    tf32: bool = False
    sync: str = "spin"  # how the host waits for the device: spin (CUDA's default) or block (harness.backends.gpu_runner)
    extra: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    input_names: list[str]
    output_names: list[str]
    # True when the runner measures device time with CUDA events (breakdown)
    times_gpu: bool = False

    @abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch synchronously: host arrays in, host arrays out."""

    def prepare(self, feeds: Mapping[str, np.ndarray], *, resident: bool = True) -> None:
        raise ModeUnsupported(f"{type(self).__name__} cannot stage inputs for timed runs")

    def run(self) -> None:
        raise ModeUnsupported(f"{type(self).__name__} cannot run a prepared batch")

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        """The outputs of the last run of the prepared batch, copied to host arrays."""
        raise ModeUnsupported(f"{type(self).__name__} cannot fetch outputs of a prepared batch")

    def timed_call(self) -> tuple[Any, tuple[Any, ...]]:
        """``(function, args)``: what one iteration of ``run`` calls on the prepared batch. The timing loop
        makes that call inline, so nothing of the harness sits between iterations; it is also the bare
        loop of benchmarks/overhead.py. By default ``run`` itself."""
        return self.run, ()

    def submit(self) -> None:
        raise ModeUnsupported(f"{type(self).__name__} has no asynchronous execution")

    def wait(self) -> None:
        raise ModeUnsupported(f"{type(self).__name__} has no asynchronous execution")

    def last_gpu_seconds(self) -> float | None:
        """Device time of the last waited-for request, None where not measured. The timed loops record no
        timing events any more (they cost throughput): device times come from :meth:`breakdown`."""
        return None

    def gpu_times(self, iterations: int) -> list[float]:
        """Device (compute) time of ``iterations`` requests, each between CUDA events; [] where not measured."""
        return []

    def breakdown(self, iterations: int) -> Breakdown | None:
        """trtexec's breakdown of ``iterations`` requests run one at a time (``harness.breakdown``); None where
        the backend cannot time the device."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about this runner for result rows (threads, streams, graphs, TF32...)."""
        return {}

    def close(self) -> None:
        """Release the runner's session/context and buffers."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine(ABC):
    """A built artifact (cached), able to create runners."""

    entry: Entry
    profile: Profile

    @abstractmethod
    def runner(self, options: RunnerOptions | None = None) -> Runner:
        ...

    def describe(self) -> dict[str, Any]:
        """How the engine is set up, for rows (ONNX Runtime: its session setup); {} where nothing to say."""
        return {}

    @property
    def path(self) -> Path:
        return self.entry.path


class Backend(ABC):
    """One inference engine family on one device."""

    name: str = ""
    on_gpu: bool = False
    needs_tensorrt: bool = False
    takes_ort_setup: bool = False  # ONNX Runtime's session setup (--ort-setup) applies

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (None when it can). Tests that need it skip with this."""
        return None

    def cannot_build(self) -> str | None:
        """Why engines cannot even be built here (None when they can)."""
        return self.unavailable()

    def unsupported_recipe(self, recipe_kind: str) -> str | None:
        """Why this backend cannot run a precision (None when it can)."""
        if recipe_kind == "trt_legacy" and not self.needs_tensorrt:
            return "TensorRT 10's weak typing is a TensorRT builder feature"
        return None

    def perf_build_options(self, mode: str, concurrency: int) -> dict[str, Any]:
        """Build options a perf mode needs (none so far: TensorRT's contexts share one optimization profile, so
        every mode times the engine the accuracy gates build)."""
        return {}

    def runner_threads(self, mode: str, runners: int) -> int | None:
        """Host threads each runner may use in a perf mode (None: not the backend's business)."""
        return None

    @abstractmethod
    def version(self) -> str:
        ...

    @abstractmethod
    def device(self) -> dict[str, Any]:
        """The device identity that goes into cache keys (GPU name and compute capability, or the CPU)."""

    @abstractmethod
    def build(self, model: Path, profile: Profile, cache: Cache, *, label: str, model_hash: str,
              options: Mapping[str, Any] | None = None, calibration: Any = None) -> Engine:
        """Build (or take from the cache) an engine for ``model`` under ``profile``.

        ``label`` names the cache folder (``model/backend/recipe-profile``); ``model_hash`` identifies the
        model's bytes for the key; ``options`` are builder options (part of the key); ``calibration`` is a
        SampleSet for backends that calibrate while building (TensorRT 10's legacy INT8).
        """

    def device_words(self) -> set[str]:
        """What a registry's device condition can test about this backend's device (``harness.conditions``)."""
        from ..conditions import device_words

        return device_words(self.device())

    def key_parts(self, model_hash: str, profile: Profile, options: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "model": model_hash,
            "backend": self.name,
            "version": self.version(),
            "device": self.device(),
            "profile": profile.key(),
            "options": dict(options or {}),
        }

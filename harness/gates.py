"""The gate tests the plugin collects from a registry file: every selected model x backend x recipe x profile
(x mode x batch x concurrency for perf), generated from the registry and the options.

pytest collects these functions from the registry TOML itself (:mod:`harness.collect`), so a project
needs no test file of its own; ids read ``models.toml::test_accuracy[classifier-ort_cpu-fp16-dynamic]``. The
marks (accuracy, perf, build, gpu, tensorrt) come with each generated case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_accuracy(accuracy_case: Any, accuracy_check: Callable[[Any], Any]) -> None:
    """The case's outputs against the FP32 reference, within the registry's budgets."""
    accuracy_check(accuracy_case)


def test_perf(perf_case: Any, perf_check: Callable[[Any], Any]) -> None:
    """Throughput and latency of one mode x batch x concurrency (run with -m perf, never beside other tests)."""
    perf_check(perf_case)


def test_build(build_case: Any, build_check: Callable[[Any], Any]) -> None:
    """Build and cache the case's engine; run nothing (run with -m build)."""
    build_check(build_case)


def test_station(station_case: Any, station_check: Callable[[Any], Any]) -> None:
    """Cycle time of a station of models in one mode and batch (run with -m perf, never beside other tests)."""
    station_check(station_case)


def test_consistency(consistency_case: Any, consistency_check: Callable[[Any], Any]) -> None:
    """A sample's outputs at every batch position and batch size of the profile equal its outputs alone."""
    consistency_check(consistency_case)


def test_determinism(determinism_case: Any, determinism_check: Callable[[Any], Any]) -> None:
    """Two builds of the recipe (cache bypassed) and repeated runs of one engine give the same outputs."""
    determinism_check(determinism_case)


def test_server(server_case: Any, server_check: Callable[[Any], Any]) -> None:
    """Open-loop serving at an offered rate, or the highest rate within a latency bound (run with -m perf)."""
    server_check(server_case)


# test function -> the kind of case it runs
GATES = {"test_accuracy": "accuracy", "test_perf": "perf", "test_build": "build", "test_station": "station",
         "test_consistency": "consistency", "test_determinism": "determinism", "test_server": "server"}

"""Open-loop serving: Poisson arrivals at offered rates, or the highest rate within ``--perf-latency-bound``.

Run it on its own: ``pytest -m perf --perf-modes server`` (or with ``--perf-latency-bound p99<=20ms``); ids read
``test_server[ranker-ort_cpu-fp32-dynamic-server-b1-n2-r90pct]``.
"""

import pytest

pytestmark = pytest.mark.perf


def test_server(server_case, server_check):
    server_check(server_case)

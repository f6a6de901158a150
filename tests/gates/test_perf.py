"""The perf suite: every selected model x backend x recipe x profile x mode x batch x concurrency.

Run it on its own: ``pytest -m perf`` (perf tests never share the device with other tests). Ids read
``test_perf[classifier-ort_cpu-fp32-dynamic-threadpool-b1-n2]``.
"""

import pytest

pytestmark = pytest.mark.perf


def test_perf(perf_case, perf_check):
    perf_check(perf_case)

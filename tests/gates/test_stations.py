"""The station suite: every selected station x backend x mode x batch (serial, multistream, threadpool, merged).

Run it with the perf suite (``pytest -m perf``; stations are perf tests and never share the device) or on its
own: ``pytest -m perf tests/gates/test_stations.py``. Ids read
``test_station[station-vision-ort_cpu-fp32-threadpool-b4]``.
"""

import pytest

pytestmark = pytest.mark.perf


def test_station(station_case, station_check):
    station_check(station_case)

"""Determinism: two builds of the recipe with the cache bypassed, and repeated runs of one engine, against the
first run. Ids read ``test_determinism[classifier-ort_cpu-fp16-dynamic]``."""

import pytest

pytestmark = pytest.mark.accuracy


def test_determinism(determinism_case, determinism_check):
    determinism_check(determinism_case)

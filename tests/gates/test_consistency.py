"""Batch consistency: a sample's outputs at every batch position and batch size of the profile against its
outputs alone. Ids read ``test_consistency[classifier-ort_cpu-fp16-dynamic]``."""

import pytest

pytestmark = pytest.mark.accuracy


def test_consistency(consistency_case, consistency_check):
    consistency_check(consistency_case)

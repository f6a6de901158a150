"""Build (and cache) every selected model x backend x recipe x profile's engine; run nothing.

`pytest -m build --backends tensorrt` prebuilds TensorRT engines on a build machine; TensorRT-RTX builds
without a GPU. Build cases run only when -m names them, so the test command writes no build rows into
reports/; CI's real TensorRT-RTX builds of every bundled model run in tests/e2e/test_tensorrt_rtx.py, with a
report of their own. Ids read ``test_build[classifier-tensorrt-fp16-dynamic]``.
"""

import pytest

pytestmark = pytest.mark.build


def test_build(build_case, build_check):
    build_check(build_case)

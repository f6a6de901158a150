"""Build (and cache) every selected model x backend x recipe x profile's engine; run nothing.

`pytest -m build --backends tensorrt` prebuilds TensorRT engines on a build machine; TensorRT-RTX builds
without a GPU (CI builds every bundled model with it). Ids read ``test_build[classifier-tensorrt-fp16-dynamic]``.
"""

import pytest

pytestmark = pytest.mark.build


def test_build(build_case, build_check):
    build_check(build_case)

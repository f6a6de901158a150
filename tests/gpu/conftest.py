"""GPU tests: they run on a machine with a CUDA GPU, cuda-python and onnxruntime-gpu, and skip elsewhere."""

import pytest

from harness import cuda


def pytest_collection_modifyitems(items):
    reason = None
    try:
        reason = cuda.unavailable()
    except Exception as exc:  # pragma: no cover - a broken driver install
        reason = str(exc)
    for item in items:
        if "tests/gpu" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}"))

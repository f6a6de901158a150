"""TensorRT tensors seen from numpy: dtypes, dims, buffer sizes. Needs no TensorRT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import BuildError, ModeUnsupported

# TensorRT DataType names -> numpy; BF16, FP8, INT4, FP4 have no numpy type: such I/O is refused
DTYPES: dict[str, Any] = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                          "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def numpy_dtype(trt_dtype: Any, tensor: str) -> np.dtype:
    """numpy dtype of a TensorRT DataType (given as the enum or its name), for I/O buffers."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    if name not in DTYPES:
        raise ModeUnsupported(f"tensor {tensor!r} has TensorRT type {name}, which has no numpy type for host I/O; "
                              "keep the model's inputs and outputs in FP32 (the recipes do)")
    return np.dtype(DTYPES[name])


def dims(value: Any) -> tuple[int, ...]:
    """A TensorRT Dims (or any sequence of ints) as a tuple."""
    return tuple(int(value[i]) for i in range(len(value)))


def data_dependent(shape: Sequence[int]) -> bool:
    """True when a tensor's shape is still unknown (-1) after every input shape was set: its size is only known
    once the engine runs (NonZero, NMS), and it is served through an output allocator."""
    return any(int(d) < 0 for d in shape)


def buffer_nbytes(shape: Sequence[int], dtype: Any, tensor: str) -> int:
    """Bytes a tensor of ``shape`` takes; every dim must be known by now."""
    if data_dependent(shape):
        raise BuildError(f"tensor {tensor!r} still has unknown dimensions {list(shape)} after all input shapes were "
                         "set; its buffer can only come from an output allocator")
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) * np.dtype(dtype).itemsize

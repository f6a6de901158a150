"""TensorRT (10 and 11) and TensorRT-RTX: one code path, the module chosen at import.

Split along the boundaries Polygraphy's ``backend/trt`` keeps apart:

``options``       builder options, their defaults and checks
``library``       finding the module, what its version can do, the wheels it came from, its logger
``network``       ONNX parsing, parse errors naming the nodes
``profiles``      optimization profiles from the harness's shape profiles; which one each context takes
``builder``       network flags, builder config, profiles, progress, the plan
``timing_cache``  the timing cache file, merged across processes
``calibrator``    TensorRT 10's weak typing and legacy INT8 calibrator (opt-in, refused on 11 and RTX)
``engine``        the cached plan, deserialized once (rebuilt when it will not deserialize)
``runner``        execution context, stream, buffers, shapes, addresses, CUDA graphs
``outputs``       outputs whose shape only the run tells (an output allocator)
``tensors``       dtypes, dims and sizes
``backend``       the TensorRT backend: availability, cache key, build orchestration
``rtx``           what differs in TensorRT-RTX: module, targets, supported GPUs, no timing cache

``docs/tensorrt-api.md`` lists every TensorRT call made, with its version notes.
"""

from .backend import TensorRTBackend
from .engine import TrtEngine
from .options import BUILD_OPTIONS, check_options
from .rtx import TensorRTRtxBackend
from .runner import TrtRunner

__all__ = ["BUILD_OPTIONS", "TensorRTBackend", "TensorRTRtxBackend", "TrtEngine", "TrtRunner", "check_options"]

"""ONNX Runtime's CUDA execution provider, on the harness's own CUDA buffers and streams.

Each runner owns a CUDA stream, handed to its session as ``user_compute_stream`` (unless the setup says
``stream=ort``: then ONNX Runtime runs on a stream of its own, synchronously, and the runner's stream only
copies), and per tensor a pinned host buffer and device memory that ONNX Runtime itself allocates (an
``OrtValue`` on ``cuda``, as a user's ``OrtValue.ortvalue_from_numpy(x, "cuda")`` is), bound through I/O
binding as OrtValues; the runner's copies go to and from their device pointers. The session's optimization
level at load and the CUDA execution provider's options (cuDNN convolution search, ``prefer_nhwc``, arena)
come from the engine's setup (:mod:`.ort_setup`); options at ONNX Runtime's defaults are left unset, so the
default setup's session is made as a user's is. Output shapes are found with one run whose outputs ONNX
Runtime allocates (outside any CUDA graph), after which the outputs are bound to the runner's buffers. With ``cuda_graph`` ONNX Runtime captures the run into a CUDA graph
(``enable_cuda_graph``) and replays it. TF32 is off unless asked for: FP32 accuracy is measured in FP32.

Streams, events, buffers, resident or copied inputs, ``run`` / ``submit`` / ``wait`` and event timing come
from :class:`~harness.backends.gpu_runner.GpuRunner`, shared with TensorRT. A synchronous run, with resident or
copied inputs, lets ONNX Runtime synchronize the stream at its end and passes no ``RunOptions``: on one session
an H100 and an H200 ran a small request at 0.71-0.87 of the same call with one (docs/gpu-results.md). Only a
submitted run (multistream), a run whose wait the runner does itself (``--perf-sync block``) and the breakdown's
timed pass need ``disable_synchronize_execution_providers``, so that ONNX Runtime returns once the work is queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from .. import cuda
from ..breakdown import Breakdown
from ..errors import BackendUnavailable, BuildError, ModeUnsupported
from .base import Runner, RunnerOptions
from .gpu_runner import GpuRunner
from .ort import OrtBackend, OrtEngine, _ort, unsupported
from .ort_setup import OrtSetup

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OrtCudaBackend(OrtBackend):
    name = "ort_cuda"
    provider = "CUDAExecutionProvider"
    on_gpu = True

    def unavailable(self) -> str | None:
        try:
            ort = _ort()
        except BackendUnavailable as exc:
            return str(exc)
        if hasattr(ort, "preload_dlls"):
            try:  # CUDA and cuDNN from the nvidia-* wheels, where ORT finds them
                ort.preload_dlls(directory="")
            except Exception:  # a partial install: the provider check below reports what matters
                pass
        if self.provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu instead of "
                    "onnxruntime)")
        return cuda.unavailable()

    def device(self) -> dict[str, Any]:
        props = cuda.device_properties(0)
        return {"type": "gpu", "name": props["name"], "compute_capability": props["compute_capability"]}

    def provider_options(self, options: RunnerOptions | None = None, setup: OrtSetup | None = None) -> dict[str, Any]:
        popts = {"device_id": "0", "use_tf32": "1" if options is not None and options.tf32 else "0"}
        if setup is not None:
            popts.update(setup.cuda_provider_options())
        return popts

    def make_runner(self, engine: OrtEngine, options: RunnerOptions) -> Runner:
        return OrtCudaRunner(self, engine, options)


class OrtDeviceMemory:
    """One tensor's device memory from ONNX Runtime's own CUDA allocator: an ``OrtValue`` the runner binds and
    copies to and from by its pointer (what :class:`harness.cuda.TensorBuffers` takes as ``device``)."""

    def __init__(self, ort: Any, shape: tuple[int, ...], dtype: Any):
        self.value: Any = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type, "cuda", 0)
        self.ptr = int(self.value.data_ptr())
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def close(self) -> None:
        self.value, self.ptr = None, 0  # ONNX Runtime frees it with the last reference


class OrtCudaRunner(GpuRunner):
    def __init__(self, backend: OrtCudaBackend, engine: OrtEngine, options: RunnerOptions):
        ort = _ort()
        setup = engine.setup
        self.own_stream = setup.stream == "own"
        if not self.own_stream and options.sync == "block":
            raise ModeUnsupported("ort_cuda: --perf-sync block needs the runner's own stream; with setup stream=ort "
                                  "ONNX Runtime synchronizes its stream itself")
        super().__init__(options.sync)
        self.options = options
        self.setup = setup
        popts = backend.provider_options(options, setup)
        if self.own_stream:
            popts.update(user_compute_stream=str(self.stream.ptr), has_user_compute_stream="1")
        if options.cuda_graph:
            popts["enable_cuda_graph"] = "1"
        try:
            self.session = backend.session(engine.path, overrides=engine.overrides, options=options,
                                           provider_options=popts, level=setup.load)
        except Exception as exc:
            super().close()
            msg = str(exc).strip()
            if unsupported(msg):
                raise ModeUnsupported(f"ort_cuda cannot run {engine.path.name}"
                                      f"{' with CUDA graphs' if options.cuda_graph else ''}: {msg[:300]}") from None
            raise BuildError(f"ort_cuda: cannot load engine {engine.path}: {msg[:500]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._ort = ort
        self._async = ort.RunOptions()
        self._async.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._probe = ort.RunOptions()
        self._probe.add_run_config_entry("gpu_graph_id", "-1")  # this run is never captured into a graph
        self._binding: Any = None

    def _stage(self, feeds: Mapping[str, np.ndarray]) -> None:
        same = set(feeds) == set(self._inputs) and all(
            self._inputs[k].shape == tuple(v.shape) and self._inputs[k].dtype == np.asarray(v).dtype
            for k, v in feeds.items())
        if not same:
            self._free_buffers()
            self._binding = None
            for k, v in feeds.items():
                shape, dtype = np.shape(v), np.asarray(v).dtype
                self._inputs[k] = cuda.TensorBuffers(shape, dtype, OrtDeviceMemory(self._ort, shape, dtype))
        for k, v in feeds.items():
            self._inputs[k].host.array[...] = v
        self._upload_inputs()
        self.stream.synchronize()
        if not same:
            self._bind()

    def _bind(self) -> None:
        binding = self.session.io_binding()
        for name, tb in self._inputs.items():
            binding.bind_ortvalue_input(name, cast(OrtDeviceMemory, tb.device).value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        # one run with ORT-allocated outputs, outside any graph, tells the output shapes
        self.session.run_with_iobinding(binding, self._probe)
        found = {name: value for name, value in zip(self.output_names, binding.get_outputs())}
        binding.clear_binding_outputs()
        for name in self.output_names:
            value = found[name]
            dtype = ORT_TYPES.get(value.data_type())
            if dtype is None:
                raise ModeUnsupported(f"ort_cuda: output {name!r} has type {value.data_type()}, not supported here")
            shape = tuple(value.shape())
            tb = cuda.TensorBuffers(shape, dtype, OrtDeviceMemory(self._ort, shape, dtype))
            self._outputs[name] = tb
            binding.bind_ortvalue_output(name, cast(OrtDeviceMemory, tb.device).value)
        self._binding = binding

    def _execute(self, sync: bool) -> None:
        # ORT synchronizes the stream at the end of a run unless the run options say not to; on its own
        # stream it must, since nothing else can wait for that stream
        if sync or not self.own_stream:
            self.session.run_with_iobinding(self._binding)
        else:
            self.session.run_with_iobinding(self._binding, self._async)

    def run(self) -> None:
        if self.own_stream and self.sync == "block":
            return super().run()  # the runner waits on its event; ONNX Runtime must not synchronize
        # ONNX Runtime synchronizes the stream it computes on at the end of the run. On the runner's own stream
        # the upload is ordered before the compute; on ONNX Runtime's stream it must be finished first
        if not self._resident:
            self._upload_inputs()
            if not self.own_stream:
                self.stream.synchronize()
        self._execute(sync=True)
        if not self._resident:
            self._download_outputs()
            self.stream.synchronize()

    def submit(self) -> None:
        if not self.own_stream:
            raise ModeUnsupported("ort_cuda with setup stream=ort runs synchronously on ONNX Runtime's stream: no "
                                  "asynchronous submit (use stream=own)")
        super().submit()

    def breakdown(self, iterations: int) -> Breakdown | None:
        # with stream=ort the compute runs on a stream the runner cannot record events on
        return super().breakdown(iterations) if self.own_stream else None

    def timed_call(self) -> tuple[Any, tuple[Any, ...]]:
        # resident inputs, spinning wait: exactly a user's loop, ORT's run synchronizing the stream itself
        if self._resident and (self.sync == "spin" or not self.own_stream):
            return self.session.run_with_iobinding, (self._binding,)
        return self.run, ()

    def describe(self) -> dict[str, Any]:
        return {"stream": "own (user_compute_stream)" if self.own_stream else "ONNX Runtime's",
                "io_binding": "OrtValues from ONNX Runtime's CUDA allocator", "tf32": self.options.tf32, "cuda_graph": self.options.cuda_graph,
                "sync": self.sync}

    def close(self) -> None:
        self._binding = None
        self.session = None  # the session goes before the stream it runs on
        super().close()

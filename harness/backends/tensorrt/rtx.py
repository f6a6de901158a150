"""TensorRT-RTX: the same builder and runtime API, with what differs kept here.

* The module: ``tensorrt_rtx`` (the SDK's own wheel) or ``tensorrt_rtx_bindings`` (the PyPI bindings,
  ``tensorrt-rtx-cu13-bindings``), whichever imports first.
* It builds without a GPU, for the compute capabilities it is told to target
  (``IBuilderConfig.num_compute_capabilities``, ``set_compute_capability``); with a GPU, for that GPU.
* Its runtime supports the GPUs its ``ComputeCapability`` enum names (Turing, Ampere, Ada, Blackwell
  RTX parts: SM75 .. SM121; not Hopper's SM90 nor Blackwell's datacenter SM100). On any other GPU its
  cases are skipped with that reason: nothing is built for a GPU it cannot run on.
* No timing cache: its operations are no-ops since RTX 1.2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ... import cuda
from ...cache import Cache
from ...errors import BuildError, ModeUnsupported
from ...profiles import Profile
from .backend import TensorRTBackend
from .options import check_options
from .timing_cache import TimingCacheFile

if TYPE_CHECKING:
    import tensorrt as trt

# targets when building without a GPU: RTX's portable default (8.6, 8.9, 12.0) plus the A100's 8.0
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120")


class TensorRTRtxBackend(TensorRTBackend):
    name = "tensorrt_rtx"
    module_names = ("tensorrt_rtx", "tensorrt_rtx_bindings")
    min_major = 0  # its own versioning (1.x)
    builds_on_cpu = True

    def supported_targets(self) -> list[str]:
        """The compute capabilities this TensorRT-RTX can build for and run on: its ComputeCapability enum's
        SMxx members (not NONE, nor CURRENT, which means "the GPU here")."""
        return [n for n in self.module().ComputeCapability.__members__ if re.fullmatch(r"SM\d+", n)]

    def unsupported_gpu(self) -> str | None:
        """Why the GPU here cannot run TensorRT-RTX engines (None when it can, or when there is no GPU)."""
        if cuda.unavailable() is not None:
            return None
        props = cuda.device_properties(0)
        cc = props["compute_capability"]
        if f"SM{cc.replace('.', '')}" in self.supported_targets():
            return None
        return (f"TensorRT-RTX {self.version()} does not support this GPU, {props['name']} (compute capability "
                f"{cc}); it supports {', '.join(self.supported_targets())}")

    def unavailable(self) -> str | None:
        reason = self.cannot_build()
        if reason:
            return reason
        if cuda.unavailable():
            return f"the TensorRT-RTX runtime needs an NVIDIA GPU ({cuda.unavailable()})"
        return self.unsupported_gpu()

    def _targets(self, opts: dict[str, Any] | None) -> list[str]:
        if opts and opts.get("compute_capabilities"):
            return list(opts["compute_capabilities"])
        if cuda.unavailable() is None:
            problem = self.unsupported_gpu()
            if problem:
                raise ModeUnsupported(f"{problem}. Nothing is built for it; to build for other GPUs on this "
                                      "machine, name them: --trt-options compute_capabilities=SM86+SM89")
            cc = cuda.device_properties(0)["compute_capability"].replace(".", "")
            return [f"SM{cc}"]
        return [t for t in RTX_DEFAULT_TARGETS if t in self.supported_targets()]

    def device(self) -> dict[str, Any]:
        """Without a GPU, the engine's identity is the set of compute capabilities it was built for."""
        if cuda.unavailable() is None:
            return super().device()
        return {"type": "rtx-targets", "compute_capabilities": list(RTX_DEFAULT_TARGETS)}

    def key_parts(self, model_hash: str, profile: Profile, options: Mapping[str, Any] | None) -> dict[str, Any]:
        parts = super().key_parts(model_hash, profile, options)
        parts["targets"] = self._targets(check_options(options))
        return parts

    def configure_device(self, config: trt.IBuilderConfig, opts: dict[str, Any]) -> None:
        # TensorRT-RTX only (TensorRT has no such calls): the compute capabilities the engine is built for
        mod = self.module()
        targets = self._targets(opts)
        known = self.supported_targets()
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise BuildError(f"tensorrt_rtx: unknown compute capability target(s) {', '.join(unknown)}; "
                             f"known: {', '.join(known)}")
        rtx_config: Any = config  # the 10.13 stubs have no RTX calls
        rtx_config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            if not rtx_config.set_compute_capability(getattr(mod.ComputeCapability, t), i):
                raise BuildError(f"tensorrt_rtx: TensorRT-RTX refused compute capability target {t} (index {i} of "
                                 f"{len(targets)})")

    def timing_cache(self, cache: Cache) -> TimingCacheFile | None:
        return None  # no-ops in TensorRT-RTX

"""The FP32 reference: ONNX Runtime on the CPU, on the source model, with graph optimizations off.

The source model is the registry entry's ``path``, or its ``reference`` when given (to gate an ONNX file
that was modified elsewhere, e.g. quantized by another tool, against the original).

Optimizations are off so that the reference computes what the ONNX graph says, node by node, without
fused kernels or approximations. The same machinery gives an INT8 recipe's *simulated* outputs: its Q/DQ
artifact run that way computes each DequantizeLinear and then the float operator, i.e. the quantization as
the file defines it, without any int8 kernel's own arithmetic (16-bit saturation on x86 CPUs without VNNI,
a GPU's accumulation order); comparing a backend with it separates the kernels' error from the recipe's. Outputs are cached (kind ``reference``), keyed by the model's bytes, the
samples and the ONNX Runtime version, as one ``.npy`` per output with the samples along axis 0; they are
read back memory-mapped a batch at a time, so memory stays flat in the evaluation-set size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Cache, digest
from .data import SampleSet
from .errors import HarnessError
from .spec import ModelSpec

CONFIG = {"cpu": "ort-cpu-fp32-no-graph-optimizations",
          "gpu": "ort-cuda-fp32-no-graph-optimizations-tf32-off",
          "simulated": "ort-cpu-no-graph-optimizations"}


class ReferenceOutputs:
    """Reference outputs of one sample set, read lazily."""

    def __init__(self, folder: Path, batch_axes: dict[str, int | None], info: dict[str, Any], hit: bool):
        manifest = json.loads((folder / "outputs.json").read_text())
        self.names: list[str] = manifest["outputs"]
        self._arrays = {name: np.load(folder / f"out{i}.npy", mmap_mode="r") for i, name in enumerate(self.names)}
        self.batch_axes = batch_axes
        self.info = info
        self.hit = hit

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        out = {}
        for name, arr in self._arrays.items():
            part = np.asarray(arr[start:stop])
            ax = self.batch_axes.get(name, 0)
            if ax is None:
                part = part[0]
            elif ax != 0:
                part = np.moveaxis(part, 0, ax)
            out[name] = part
        return out


def reference_outputs(cache: Cache, spec: ModelSpec, samples: SampleSet, *, device: str = "cpu") -> ReferenceOutputs:
    """The reference outputs for ``samples``; ``device="gpu"`` computes them with ONNX Runtime CUDA (TF32 off),
    for evaluation sets too large for the CPU. A GPU reference is keyed apart from the CPU one."""
    import onnxruntime as ort

    if device not in CONFIG:
        raise HarnessError(f"--reference-device must be cpu or gpu, got {device!r}")
    parts = {
        "model": digest(spec.reference_model)[1] if spec.reference_path else spec.model_bytes_hash(),
        "samples": samples.key(),
        "onnxruntime": ort.__version__,
        "config": CONFIG[device],
        # how outputs are laid out on disk (samples along axis 0, moved from each output's batch axis)
        "output_batch_axes": dict(sorted(spec.output_batch_axes.items())),
    }

    if device == "gpu":
        from .backends import get_backend

        backend = get_backend("ort_cuda")
        reason = backend.unavailable()
        if reason:
            raise HarnessError(f"--reference-device gpu: {reason}")
        parts["device"] = backend.device()

    def build(folder: Path) -> dict[str, Any]:
        return _compute(spec.reference_model, spec, samples, folder, device)

    label = f"{spec.name}/{samples.purpose}" + ("-gpu" if device == "gpu" else "")
    entry = cache.get_or_build("reference", label, parts, "outputs", build)
    ref = ReferenceOutputs(entry.path, spec.output_batch_axes, entry.info, entry.hit)
    if entry.info.get("nonfinite_samples"):
        raise HarnessError(
            f"model {spec.name!r}: the FP32 reference itself produces NaN/Inf on "
            f"{entry.info['nonfinite_samples']} samples (first: {entry.info['nonfinite_first']}); "
            "fix the model or its input ranges before gating accuracy"
        )
    return ref


def simulated_outputs(cache: Cache, spec: ModelSpec, samples: SampleSet, *, artifact: Path, artifact_hash: str,
                      recipe: str) -> ReferenceOutputs:
    """A recipe artifact's outputs as its ONNX defines them (ONNX Runtime CPU, graph optimizations off), cached
    like the reference. Non-finite values are recorded in ``info``, not refused: they are the recipe's."""
    import onnxruntime as ort

    parts = {
        "model": artifact_hash,
        "samples": samples.key(),
        "onnxruntime": ort.__version__,
        "config": CONFIG["simulated"],
        "output_batch_axes": dict(sorted(spec.output_batch_axes.items())),
    }

    def build(folder: Path) -> dict[str, Any]:
        return _compute(artifact, spec, samples, folder, "cpu")

    entry = cache.get_or_build("reference", f"{spec.name}/{samples.purpose}-{recipe}-simulated", parts, "outputs",
                               build)
    return ReferenceOutputs(entry.path, spec.output_batch_axes, entry.info, entry.hit)


def _compute(model: Path, spec: ModelSpec, samples: SampleSet, folder: Path, device: str) -> dict[str, Any]:
    import onnxruntime as ort

    folder.mkdir()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "gpu":
        providers = [("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"}), "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(model), so, providers=providers)
    names = [o.name for o in sess.get_outputs()]
    files: dict[str, Any] = {}
    nonfinite: list[int] = []
    for batch in samples.batches():
        outs = dict(zip(names, sess.run(names, batch.feeds)))
        for i, name in enumerate(names):
            arr = outs[name]
            ax = spec.output_batch_axes.get(name, 0)
            arr = arr[None] if ax is None else np.moveaxis(arr, ax, 0)[: batch.count]
            if name not in files:
                files[name] = np.lib.format.open_memmap(folder / f"out{i}.npy", mode="w+", dtype=arr.dtype,
                                                        shape=(samples.count, *arr.shape[1:]))
            if arr.shape[1:] != files[name].shape[1:]:
                raise HarnessError(f"model {spec.name!r}: output {name!r} changes its per-sample shape between "
                                   f"batches ({files[name].shape[1:]} then {arr.shape[1:]})")
            files[name][batch.index: batch.index + batch.count] = arr
            bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.dtype.kind == "f" else None
            if bad is not None and bad.any():
                nonfinite.extend(int(batch.index + j) for j in np.flatnonzero(bad))
    for f in files.values():
        f.flush()
    del files
    (folder / "outputs.json").write_text(json.dumps({"outputs": names}))
    return {"nonfinite_samples": len(nonfinite), "nonfinite_first": nonfinite[:5], "samples": samples.count,
            "device": device}


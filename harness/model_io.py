"""A model's inputs, outputs and real samples as the registry describes them, checked against the ONNX file.

Part of the registry loader (:mod:`harness.registry`): it reads the ONNX file's declared inputs and outputs
and merges the registry's ``[models.NAME.inputs.*]`` and ``[models.NAME.outputs.*]`` tables into them (the
samples file is checked by :mod:`harness.sample_file`). Every problem is a :class:`~harness.errors.RegistryError` naming the registry, the model and
the field.

Batch axes are inferred where the declaration makes them unambiguous: the batch is the dimension name that
the inputs' first axes share (``batch``); an input carrying it at another axis (a recurrent state
``[2, batch, 128]``) is batched there, one without it (a scalar sample rate) is shared by the whole batch.
``batch_axis = N`` or ``batch_axis = "none"`` in the registry overrides. Outputs are settled later from a
real run (:mod:`harness.layout`), since declared output shapes are often wrong.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .budgets import LABEL_METRICS, TASK_METRICS, OutputConfig
from .errors import RegistryError
from .spec import DISTRIBUTIONS, DTYPES, ONNX_DTYPES, Dim, InputSpec, ModelSpec

Declared = dict[str, tuple[Any, tuple[Dim | None, ...] | None]]  # name -> (numpy dtype, dims; None: no shape)
NONE = "none"  # batch_axis = "none": a shared input, or an output with one value per batch


def only_keys(entry: Any, allowed: set[str], src: str, model: str | None, fld: str) -> None:
    if not isinstance(entry, dict):
        raise RegistryError(src, model, fld or None, "must be a table")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        where = f"{fld}.{unknown[0]}" if fld else unknown[0]
        raise RegistryError(src, model, where, f"unknown field; allowed here: {', '.join(sorted(allowed))}")


# ------------------------------------------------------------------------------------------- the ONNX file


class OnnxFacts:
    """What the registry reads from an ONNX file: declared inputs and outputs, IR version, embedding tables."""

    def __init__(self, path: Path, src: str, name: str, fld: str = "path"):
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises several types for a bad file
            raise RegistryError(src, name, fld, f"{path} is not a readable ONNX model: {exc}") from None
        inits = {i.name: i for i in model.graph.initializer}
        self.path = path
        self.ir_version = int(model.ir_version)
        self.inputs = _declared([v for v in model.graph.input if v.name not in inits])
        self.outputs = _declared(list(model.graph.output))
        self.gathers = _embedding_tables(model.graph, set(self.inputs), inits)


def _declared(values: list[Any]) -> Declared:
    out: Declared = {}
    for v in values:
        tt = v.type.tensor_type
        if not tt.HasField("shape"):
            out[v.name] = (ONNX_DTYPES.get(tt.elem_type), None)
            continue
        dims: list[Dim | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        out[v.name] = (ONNX_DTYPES.get(tt.elem_type), tuple(dims))
    return out


# ops that pass integer ids through unchanged, on their first input
_PASS_IDS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose"}


def _embedding_tables(graph: Any, inputs: set[str], inits: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Per graph input: the Gather nodes that index a constant table with it directly (through casts and
    reshapes), as (node name, number of rows)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for inp in inputs:
        frontier, seen = {inp}, set()
        while frontier:
            t = frontier.pop()
            seen.add(t)
            for node in graph.node:
                if node.op_type in _PASS_IDS and node.input and node.input[0] == t:
                    frontier |= {o for o in node.output if o and o not in seen}
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == t \
                        and node.input[0] in inits:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = list(inits[node.input[0]].dims)
                    if dims:
                        found.setdefault(inp, []).append((node.name or node.output[0], int(dims[axis])))
    return found


def check_onnx(facts: OnnxFacts, src: str, name: str, fld: str = "path") -> None:
    """The ONNX checker on the file (after the IR version, whose refusal says more)."""
    import onnx

    try:
        # by path, so that a model with external data or over 2 GB is checked whole
        onnx.checker.check_model(str(facts.path))
    except Exception as exc:  # ValidationError, or a bad external-data reference
        first = " ".join(str(exc).split())
        raise RegistryError(src, name, fld, f"{facts.path} fails the ONNX checker: {first}") from None


@functools.cache
def onnxruntime_ir_problem(ir_version: int) -> str | None:
    """ONNX Runtime's refusal of a file of this IR version, if it refuses one (None when it reads it, or is not
    installed). A tiny in-memory model is loaded: ONNX Runtime has no API that says which IR versions it reads."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:  # pragma: no cover - the reference needs onnxruntime anyway
        return None
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = ir_version
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "IR version" in str(exc) or "ir_version" in str(exc):
            return str(exc).strip().splitlines()[0]
    return None


def check_ir_version(facts: OnnxFacts, src: str, name: str, field: str = "path") -> None:
    if facts.ir_version <= 9:  # every supported onnxruntime (>= 1.17) reads these
        return
    problem = onnxruntime_ir_problem(facts.ir_version)
    if problem is None:
        return
    import onnxruntime

    most = re.search(r"max supported IR version: ?(\d+)", problem)
    readable = f"it reads up to IR {most.group(1)}" if most else problem
    raise RegistryError(src, name, field, f"{facts.path.name} has IR version {facts.ir_version}, which onnxruntime "
                        f"{onnxruntime.__version__} cannot load ({readable}); every case would fail. The IR version "
                        "stamps the file format, not the operators: re-save the model with an older one "
                        f"(model.ir_version = {most.group(1) if most else 'N'}; onnx.save(model, path)) or upgrade "
                        "onnxruntime")


# ----------------------------------------------------------------------------------------------- inputs

_INPUT_KEYS = {"dtype", "shape", "range", "distribution", "batch_axis", "sample_scale", "sample_offset", "value"}


def parse_inputs(raw: Any, facts: OnnxFacts, src: str, name: str) -> dict[str, InputSpec]:
    if not isinstance(raw, dict):
        raise RegistryError(src, name, "inputs", "must be a table of inputs by name")
    for inp in raw:
        if inp not in facts.inputs:
            raise RegistryError(src, name, f"inputs.{inp}", f"unknown input name; the model's inputs are "
                                f"{', '.join(facts.inputs)}")
    dims_of = {inp: _parse_dims(raw.get(inp, {}).get("shape") if isinstance(raw.get(inp), dict) else None,
                                declared[1] or (), src, name, f"inputs.{inp}.shape")
               for inp, declared in facts.inputs.items()}
    batch_name = _batch_name(dims_of)
    specs = {}
    for inp, (onnx_dtype, _) in facts.inputs.items():
        entry = raw.get(inp, {})
        fld = f"inputs.{inp}"
        only_keys(entry, _INPUT_KEYS, src, name, fld)
        dtype = _dtype(entry.get("dtype"), onnx_dtype, src, name, fld)
        dims = dims_of[inp]
        rng = entry.get("range", [0, 1] if not np.issubdtype(dtype, np.integer) else [0, 100])
        if (not isinstance(rng, list) or len(rng) != 2 or not all(isinstance(x, (int, float)) for x in rng)
                or rng[0] > rng[1]):
            raise RegistryError(src, name, f"{fld}.range", f"must be [low, high] with low <= high, got {rng!r}")
        dist = entry.get("distribution", "uniform")
        if dist not in DISTRIBUTIONS:
            raise RegistryError(src, name, f"{fld}.distribution", f"must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
        if dist == "zipf" and not np.issubdtype(dtype, np.integer):
            raise RegistryError(src, name, f"{fld}.distribution", "zipf draws integer ids; the input is not integer")
        if dist in ("normal", "smooth") and not np.issubdtype(dtype, np.floating):
            raise RegistryError(src, name, f"{fld}.distribution", f"{dist} draws real values; the input is {dtype.name}")
        batch_axis = _input_batch_axis(entry, dims, batch_name, src, name, fld)
        scale, offset = entry.get("sample_scale", 1.0), entry.get("sample_offset", 0.0)
        for key, number in (("sample_scale", scale), ("sample_offset", offset)):
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                raise RegistryError(src, name, f"{fld}.{key}", f"must be a number, got {number!r}")
        if (scale, offset) != (1.0, 0.0) and not np.issubdtype(dtype, np.floating):
            raise RegistryError(src, name, f"{fld}.sample_scale", "scale/offset apply to real-valued inputs only")
        value = _value(entry.get("value"), dtype, dims, batch_axis, src, name, fld)
        if np.issubdtype(dtype, np.integer) and value is None:
            check_ids(inp, facts, float(rng[0]), float(rng[1]), src, name, f"{fld}.range", "range")
        elif value is not None and np.issubdtype(dtype, np.integer) and value.size:
            check_ids(inp, facts, float(value.min()), float(value.max()), src, name, f"{fld}.value", "value")
        specs[inp] = InputSpec(inp, dtype, dims, float(rng[0]), float(rng[1]), dist, batch_axis, float(scale),
                               float(offset), value)
    return specs


def _dtype(dtype_name: Any, onnx_dtype: Any, src: str, name: str, fld: str) -> np.dtype:
    if dtype_name is None:
        if onnx_dtype is None or isinstance(onnx_dtype, str):
            raise RegistryError(src, name, f"{fld}.dtype", "the model's input type is not supported; "
                                f"supported: {', '.join(DTYPES)}")
        return np.dtype(onnx_dtype)
    if dtype_name not in DTYPES:
        raise RegistryError(src, name, f"{fld}.dtype", f"unknown dtype {dtype_name!r}; known: {', '.join(DTYPES)}")
    dtype = np.dtype(DTYPES[dtype_name])
    if onnx_dtype is not None and not isinstance(onnx_dtype, str) and np.dtype(onnx_dtype) != dtype:
        raise RegistryError(src, name, f"{fld}.dtype", f"{dtype_name} does not match the model's "
                            f"{np.dtype(onnx_dtype).name}")
    return dtype


def _parse_dims(raw: Any, model_dims: tuple, src: str, name: str, fld: str) -> tuple[Dim, ...]:
    if raw is None:
        if any(d is None for d in model_dims):
            raise RegistryError(src, name, fld, "the model has an unnamed dynamic dimension; give the shape here "
                                "with a name for it, e.g. [\"batch\", 3, 224, 224]")
        return tuple(model_dims)
    if not isinstance(raw, list) or not all(isinstance(d, (int, str)) for d in raw):
        raise RegistryError(src, name, fld, f"must be a list of integers and dimension names, got {raw!r}")
    if len(raw) != len(model_dims):
        raise RegistryError(src, name, fld, f"has rank {len(raw)} but the model's input has rank {len(model_dims)} "
                            f"({list(model_dims)})")
    for given, model in zip(raw, model_dims):
        if isinstance(model, int) and given != model:
            raise RegistryError(src, name, fld, f"{raw!r} disagrees with the model's static shape {list(model_dims)}")
    return tuple(raw)


def _batch_name(dims_of: dict[str, tuple[Dim, ...]]) -> str | None:
    """The batch dimension's name: the one the inputs' first axes share most (ties: the first input's)."""
    firsts = [d[0] for d in dims_of.values() if d and isinstance(d[0], str)]
    return Counter(firsts).most_common(1)[0][0] if firsts else None


def _axis_or_none(value: Any, rank: int, src: str, name: str, fld: str) -> int | None:
    if value == NONE:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < max(rank, 1)):
        raise RegistryError(src, name, fld, f"must be an axis of the {rank}-d tensor (0 to {rank - 1}) or "
                            f"\"{NONE}\", got {value!r}")
    return value


def _input_batch_axis(entry: dict, dims: tuple[Dim, ...], batch_name: str | None, src: str, name: str,
                      fld: str) -> int | None:
    if "batch_axis" in entry:
        return _axis_or_none(entry["batch_axis"], len(dims), src, name, f"{fld}.batch_axis")
    if batch_name is not None:
        axes = [i for i, d in enumerate(dims) if d == batch_name]
        if len(axes) > 1:
            raise RegistryError(src, name, f"{fld}.batch_axis", f"the shape {list(dims)} names the batch dimension "
                                f"{batch_name!r} at axes {axes}: say which one holds the samples")
        if axes:
            return axes[0]
    # a dynamic first axis under another name is still taken for the batch, as exporters name them freely
    return 0 if dims and isinstance(dims[0], str) else None


def _value(raw: Any, dtype: np.dtype, dims: tuple[Dim, ...], batch_axis: int | None, src: str, name: str,
           fld: str) -> np.ndarray | None:
    """The registry's ``value``: a number (filling a sample's shape) or a nested list of one sample's shape."""
    if raw is None:
        return None
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind not in "biuf" or arr.dtype == object:
            raise ValueError
        value = arr.astype(dtype)
    except (ValueError, TypeError):
        raise RegistryError(src, name, f"{fld}.value", f"must be a number or a nested list of numbers, got {raw!r}") from None
    if not np.array_equal(value.astype(np.float64), arr.astype(np.float64)) and dtype.kind in "biu":
        raise RegistryError(src, name, f"{fld}.value", f"{raw!r} does not fit the input's {dtype.name}")
    sample = [d for i, d in enumerate(dims) if i != batch_axis]
    if value.ndim and (value.ndim != len(sample) or any(isinstance(d, int) and d != s for d, s in zip(sample, value.shape))):
        raise RegistryError(src, name, f"{fld}.value", f"has shape {list(value.shape)}; one sample of this input has "
                            f"shape {sample} (or give a single number to fill it)")
    return value


def check_ids(inp: str, facts: OnnxFacts, low: float, high: float, src: str, name: str, fld: str, what: str) -> None:
    """Integer ids that index an embedding table must lie inside it (negative ids count from the end)."""
    for node, rows in facts.gathers.get(inp, []):
        if low < -rows or high > rows - 1:
            raise RegistryError(src, name, fld, f"ids from {low:g} to {high:g} ({what}) index Gather node {node!r}, "
                                f"whose table has {rows} rows: ids must lie in [0, {rows - 1}] (or [-{rows}, -1], "
                                "counted from the end); ONNX Runtime would stop with an out-of-bounds error")


# ---------------------------------------------------------------------------------------------- outputs

_OUTPUT_KEYS = {"class_axis", "batch_axis", "metrics", "threshold", "channel_axis", "channels", "ctc_blank", "labels"}


def parse_outputs(raw: Any, facts: OnnxFacts, spec: ModelSpec, src: str, name: str
                  ) -> tuple[dict[str, OutputConfig], dict[str, int | None], frozenset[str]]:
    """Output settings, the batch axes the declaration suggests, and the outputs whose axis the registry fixes."""
    if not isinstance(raw, dict):
        raise RegistryError(src, name, "outputs", "must be a table of outputs by name")
    for out in raw:
        if out not in facts.outputs:
            raise RegistryError(src, name, f"outputs.{out}", f"unknown output name; the model's outputs are "
                                f"{', '.join(facts.outputs)}")
    configs, batch_axes, explicit = {}, {}, set()
    batch_dim = spec.batch_dim
    for out, (_, dims) in facts.outputs.items():
        entry = raw.get(out, {})
        fld = f"outputs.{out}"
        only_keys(entry, _OUTPUT_KEYS, src, name, fld)
        configs[out] = _output_config(entry, src, name, fld)
        if "batch_axis" in entry:
            value = entry["batch_axis"]
            if value != NONE and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise RegistryError(src, name, f"{fld}.batch_axis", f"must be an axis (0, 1, ...) or \"{NONE}\", "
                                    f"got {value!r}")
            batch_axes[out] = None if value == NONE else value
            explicit.add(out)
        else:
            batch_axes[out] = _declared_output_axis(dims, batch_dim)
    return configs, batch_axes, frozenset(explicit)


def _declared_output_axis(dims: tuple[Dim | None, ...] | None, batch_dim: str | None) -> int | None:
    if batch_dim is None or not dims:
        return None
    axes = [i for i, d in enumerate(dims) if d == batch_dim]
    if len(axes) == 1:
        return axes[0]
    # a dynamic first dimension (named or not: exporters often rename it on outputs) is the batch
    return 0 if not isinstance(dims[0], int) else None


def _int(entry: dict, key: str, src: str, name: str, fld: str, *, low: int | None = None) -> int | None:
    if key not in entry:
        return None
    v = entry[key]
    if not isinstance(v, int) or isinstance(v, bool) or (low is not None and v < low):
        raise RegistryError(src, name, f"{fld}.{key}", f"must be an integer{f' >= {low}' if low is not None else ''}, "
                            f"got {v!r}")
    return v


def _output_config(entry: dict, src: str, name: str, fld: str) -> OutputConfig:
    metrics = entry.get("metrics", [])
    if not isinstance(metrics, list) or not all(m in TASK_METRICS for m in metrics):
        raise RegistryError(src, name, f"{fld}.metrics", f"must be a list of task metrics ({', '.join(TASK_METRICS)}), "
                            f"got {metrics!r}")
    threshold = entry.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise RegistryError(src, name, f"{fld}.threshold", f"must be a number, got {threshold!r}")
    channels = entry.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                 for c in channels):
        raise RegistryError(src, name, f"{fld}.channels", f"must be a list of channel indices, got {channels!r}")
    cfg = OutputConfig(class_axis=_int(entry, "class_axis", src, name, fld), metrics=tuple(dict.fromkeys(metrics)),
                       threshold=float(threshold), channel_axis=_int(entry, "channel_axis", src, name, fld),
                       channels=tuple(channels), ctc_blank=_int(entry, "ctc_blank", src, name, fld, low=0) or 0,
                       labels=entry.get("labels"))
    if channels and cfg.channel_axis is None:
        raise RegistryError(src, name, f"{fld}.channels", "needs channel_axis: the axis the channels are taken along")
    if "ctc_exact" in cfg.metrics and cfg.class_axis is None:
        raise RegistryError(src, name, f"{fld}.metrics", "ctc_exact decodes the argmax along class_axis: set it")
    if (cfg.threshold != 0.5 and not {"iou", "dice"} & set(cfg.metrics)):
        raise RegistryError(src, name, f"{fld}.threshold", "applies to the iou and dice metrics; add one to metrics")
    if cfg.labels is not None and (not isinstance(cfg.labels, str) or not cfg.label_metric_names()):
        raise RegistryError(src, name, f"{fld}.labels", "names the samples file's array of labels for this output and "
                            "needs a metric to score against it: class_axis (label_top1) or one of the metrics "
                            f"{', '.join(sorted(set(LABEL_METRICS.values()) - {'top1'}))}")
    return cfg

"""The model registry's TOML (``fixtures/models.toml``, or the user's own) read into :mod:`harness.spec` objects.

A user adds a model by adding an entry; no code. Every field is checked against the ONNX file when the
registry loads, and a bad entry raises :class:`~harness.errors.RegistryError` naming the registry file,
the model and the field. See ``fixtures/models.toml`` for the annotated format.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .budgets import Budget, OutputConfig
from .conditions import Condition, ConditionError, DeviceExpr
from .data import read_npz
from .errors import HarnessError, ProfileError, RegistryError
from .profiles import Profile
from .spec import (
    DISTRIBUTIONS,
    DTYPES,
    ONNX_DTYPES,
    Dim,
    InputSpec,
    ModelSpec,
    Registry,
    SampleSource,
    Scope,
    file_sha256,
)
from .stations.registry import parse_stations

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise RegistryError(src, None, None, "registry file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(src, None, None, f"not valid TOML: {exc}") from None
    _only_keys(data, {"defaults", "recipes", "models", "stations"}, src, None, "")
    defaults = data.get("defaults", {})
    _only_keys(defaults, {"recipes", "perf_recipes", "budgets"}, src, None, "defaults")
    default_budgets = _parse_budgets(defaults.get("budgets", {}), src, None, "defaults.budgets")
    recipes = data.get("recipes", {})
    if not isinstance(recipes, dict):
        raise RegistryError(src, None, "recipes", "must be a table of named recipes")
    default_recipes = _recipe_names(defaults.get("recipes", ["fp32"]), src, None, "defaults.recipes")
    if defaults.get("perf_recipes") is not None:
        _recipe_names(defaults["perf_recipes"], src, None, "defaults.perf_recipes")
    models_raw = data.get("models", {})
    if not models_raw:
        raise RegistryError(src, None, "models", "the registry defines no models")
    models = {}
    for name, entry in models_raw.items():
        if not isinstance(entry, dict):
            raise RegistryError(src, name, None, "must be a table")
        models[name] = _parse_model(name, entry, path.parent, src, default_budgets)
    perf_recipes = defaults.get("perf_recipes")
    stations = parse_stations(data.get("stations", {}), models, src)
    return Registry(path, models, recipes, list(default_recipes), list(perf_recipes) if perf_recipes else None,
                    stations=stations, default_budgets=default_budgets)


_MODEL_KEYS = {"path", "package", "sha256", "reference", "description", "inputs", "outputs", "profiles",
               "budgets", "evaluation", "calibration", "recipes", "known_failures", "where"}


def _parse_model(name: str, entry: dict, base: Path, src: str, default_budgets: dict[str, list[Budget]]) -> ModelSpec:
    _only_keys(entry, _MODEL_KEYS, src, name, "")
    if "path" not in entry:
        raise RegistryError(src, name, "path", "missing: give the ONNX file's path (relative to the registry)")
    unavailable = None
    package = entry.get("package")
    if package:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            unavailable = f"its package {package!r} is not installed (it ships the ONNX file)"
            model_path = Path(entry["path"])
        else:
            model_path = Path(list(found.submodule_search_locations)[0]) / entry["path"]
    else:
        model_path = (base / entry["path"]).resolve()
    spec_sha = entry.get("sha256", "")
    if unavailable is None:
        if not model_path.is_file():
            raise RegistryError(src, name, "path", f"ONNX file not found: {model_path}")
        if spec_sha:
            actual = file_sha256(model_path)
            if actual != spec_sha:
                raise RegistryError(src, name, "sha256", f"{model_path} has sha256 {actual}, but the registry "
                                    f"records {spec_sha}: the file changed (regenerate it or update the hash)")
    reference_path = None
    if "reference" in entry and unavailable is None:
        reference_path = (model_path.parent if package else base) / entry["reference"]
        reference_path = reference_path.resolve()
        if not reference_path.is_file():
            raise RegistryError(src, name, "reference", f"reference ONNX file not found: {reference_path}")
    own_budgets = _parse_budgets(entry.get("budgets", {}), src, name, "budgets")
    budgets = dict(default_budgets)
    budgets.update(own_budgets)
    known = _parse_known(entry.get("known_failures", {}), src, name, "known_failures")
    scopes = _parse_scopes(entry.get("where", []), src, name)

    evaluation = entry.get("evaluation", {})
    _only_keys(evaluation, {"size", "seed", "samples"}, src, name, "evaluation")
    calibration = entry.get("calibration", {})
    _only_keys(calibration, {"size", "source"}, src, name, "calibration")
    eval_size = _positive_int(evaluation.get("size", 64), src, name, "evaluation.size")
    seed = evaluation.get("seed", 0)
    if not isinstance(seed, int):
        raise RegistryError(src, name, "evaluation.seed", f"must be an integer, got {seed!r}")
    samples = None
    if "samples" in evaluation:
        sp = (base / evaluation["samples"]).resolve()
        if not sp.is_file():
            raise RegistryError(src, name, "evaluation.samples", f"samples file not found: {sp}")
        samples = SampleSource(sp, file_sha256(sp))
    cal_source = calibration.get("source", "auto")
    if cal_source not in ("auto", "real", "generated"):
        raise RegistryError(src, name, "calibration.source", f"must be 'auto', 'real' or 'generated', got {cal_source!r}")
    if cal_source == "real" and samples is None:
        raise RegistryError(src, name, "calibration.source", "'real' needs evaluation.samples (a .npz of real inputs)")

    spec = ModelSpec(
        name=name,
        path=model_path,
        source=src,
        inputs={},
        outputs={},
        output_batch_axes={},
        profiles={},
        budgets=budgets,
        eval_size=eval_size,
        eval_seed=seed,
        samples=samples,
        calibration_size=_positive_int(calibration.get("size", 32), src, name, "calibration.size"),
        calibration_source=cal_source,
        recipes=_recipe_names(entry["recipes"], src, name, "recipes") if "recipes" in entry else None,
        description=entry.get("description", ""),
        unavailable=unavailable,
        sha256=spec_sha,
        reference_path=reference_path,
        known_failures=known,
        scopes=scopes,
    )
    if unavailable is not None:
        return spec
    graph_inputs, graph_outputs = _onnx_io(model_path, src, name, "path")
    if reference_path is not None:
        ref_in, ref_out = _onnx_io(reference_path, src, name, "reference")
        if set(ref_in) != set(graph_inputs) or set(ref_out) != set(graph_outputs):
            raise RegistryError(src, name, "reference", f"{reference_path.name} has inputs {sorted(ref_in)} and outputs "
                                f"{sorted(ref_out)}; the model has {sorted(graph_inputs)} and {sorted(graph_outputs)}")
    spec.inputs = _parse_inputs(entry.get("inputs", {}), graph_inputs, src, name)
    spec.outputs, spec.output_batch_axes = _parse_outputs(entry.get("outputs", {}), graph_outputs, spec, src, name)
    _check_budget_outputs(own_budgets, default_budgets, scopes, list(graph_outputs), src, name)
    spec.profiles = _parse_profiles(entry.get("profiles", {}), spec, src, name)
    if samples is not None:
        _check_samples(samples, spec, src, name)
    return spec


def _onnx_io(path: Path, src: str, name: str, fld: str) -> tuple[dict[str, tuple[Any, tuple[Dim | None, ...]]], dict[str, tuple[Any, tuple[Dim | None, ...]]]]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for a bad file
        raise RegistryError(src, name, fld, f"{path} is not a readable ONNX model: {exc}") from None
    try:
        # by path, so that a model with external data or over 2 GB is checked whole
        onnx.checker.check_model(str(path))
    except Exception as exc:  # ValidationError, or a bad external-data reference
        first = " ".join(str(exc).split())
        raise RegistryError(src, name, fld, f"{path} fails the ONNX checker: {first}") from None
    inits = {i.name for i in model.graph.initializer}

    def io(values: Any) -> dict[str, tuple[Any, tuple[Dim | None, ...]]]:
        out = {}
        for v in values:
            if v.name in inits:
                continue
            tt = v.type.tensor_type
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

    return io(model.graph.input), io(model.graph.output)


def _parse_inputs(raw: dict, graph_inputs: dict, src: str, name: str) -> dict[str, InputSpec]:
    if not isinstance(raw, dict):
        raise RegistryError(src, name, "inputs", "must be a table of inputs by name")
    for inp in raw:
        if inp not in graph_inputs:
            raise RegistryError(src, name, f"inputs.{inp}", f"unknown input name; the model's inputs are "
                                f"{', '.join(graph_inputs)}")
    specs = {}
    for inp, (onnx_dtype, model_dims) in graph_inputs.items():
        entry = raw.get(inp, {})
        fld = f"inputs.{inp}"
        _only_keys(entry, {"dtype", "shape", "range", "distribution", "batch_axis", "sample_scale", "sample_offset"},
                   src, name, fld)
        dtype_name = entry.get("dtype")
        if dtype_name is None:
            if onnx_dtype is None or isinstance(onnx_dtype, str):
                raise RegistryError(src, name, f"{fld}.dtype", "the model's input type is not supported; "
                                    f"supported: {', '.join(DTYPES)}")
            dtype = np.dtype(onnx_dtype)
        else:
            if dtype_name not in DTYPES:
                raise RegistryError(src, name, f"{fld}.dtype", f"unknown dtype {dtype_name!r}; known: {', '.join(DTYPES)}")
            dtype = np.dtype(DTYPES[dtype_name])
            if onnx_dtype is not None and not isinstance(onnx_dtype, str) and np.dtype(onnx_dtype) != dtype:
                raise RegistryError(src, name, f"{fld}.dtype", f"{dtype_name} does not match the model's "
                                    f"{np.dtype(onnx_dtype).name}")
        dims = _parse_dims(entry.get("shape"), model_dims, src, name, f"{fld}.shape")
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
        batch_axis = entry.get("batch_axis", 0 if dims and isinstance(dims[0], str) else None)
        if batch_axis is not None and not (isinstance(batch_axis, int) and 0 <= batch_axis < len(dims)):
            raise RegistryError(src, name, f"{fld}.batch_axis", f"must be an axis of the {len(dims)}-d input, got {batch_axis!r}")
        scale, offset = entry.get("sample_scale", 1.0), entry.get("sample_offset", 0.0)
        for key, value in (("sample_scale", scale), ("sample_offset", offset)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise RegistryError(src, name, f"{fld}.{key}", f"must be a number, got {value!r}")
        if (scale, offset) != (1.0, 0.0) and not np.issubdtype(dtype, np.floating):
            raise RegistryError(src, name, f"{fld}.sample_scale", "scale/offset apply to real-valued inputs only")
        specs[inp] = InputSpec(inp, dtype, dims, float(rng[0]), float(rng[1]), dist, batch_axis, float(scale),
                               float(offset))
    return specs


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


def _parse_outputs(raw: dict, graph_outputs: dict, spec: ModelSpec, src: str, name: str) -> tuple[dict, dict]:
    for out in raw:
        if out not in graph_outputs:
            raise RegistryError(src, name, f"outputs.{out}", f"unknown output name; the model's outputs are "
                                f"{', '.join(graph_outputs)}")
    configs, batch_axes = {}, {}
    batch_dim = spec.batch_dim
    for out, (_, dims) in graph_outputs.items():
        entry = raw.get(out, {})
        _only_keys(entry, {"class_axis", "batch_axis"}, src, name, f"outputs.{out}")
        cax = entry.get("class_axis")
        if cax is not None and not (isinstance(cax, int) and -len(dims) <= cax < len(dims)):
            raise RegistryError(src, name, f"outputs.{out}.class_axis", f"must be an axis of the {len(dims)}-d output")
        if "batch_axis" in entry:
            bax = entry["batch_axis"]
        else:
            # a dynamic first dimension (named or not: exporters often rename it on outputs) is the batch
            bax = 0 if (batch_dim is not None and dims and not isinstance(dims[0], int)) else None
        configs[out] = OutputConfig(class_axis=cax)
        batch_axes[out] = bax
    return configs, batch_axes


def _parse_profiles(raw: dict, spec: ModelSpec, src: str, name: str) -> dict[str, Profile]:
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(src, name, "profiles", "give at least one shape profile, e.g. "
                            "dynamic = { min = \"x:1x3\", opt = \"x:8x3\", max = \"x:32x3\" }")
    profiles = {}
    for pname, entry in raw.items():
        fld = f"profiles.{pname}"
        if not isinstance(entry, dict):
            raise RegistryError(src, name, fld, "must be a table with 'shapes' or 'min'/'opt'/'max'")
        _only_keys(entry, {"shapes", "min", "opt", "max"}, src, name, fld)
        try:
            prof = Profile.from_strings(pname, source=f"{src}: model {name!r}", **entry)
        except ProfileError as exc:
            raise RegistryError(src, name, fld, str(exc).split(": ", 2)[-1]) from None
        for inp in prof.inputs:
            if inp not in spec.inputs:
                raise RegistryError(src, name, fld, f"unknown input name {inp!r}; the model's inputs are "
                                    f"{', '.join(spec.inputs)}")
        for inp, ispec in spec.inputs.items():
            dynamic = any(isinstance(d, str) for d in ispec.dims)
            if inp not in prof.opt:
                if dynamic:
                    raise RegistryError(src, name, fld, f"input {inp!r} has dynamic dimensions {list(ispec.dims)} "
                                        "and needs a shape in every profile")
                continue
            for which in ("min", "opt", "max"):
                shape = getattr(prof, which)[inp]
                if len(shape) != len(ispec.dims) or any(isinstance(d, int) and d != s for d, s in zip(ispec.dims, shape)):
                    raise RegistryError(src, name, fld, f"{which} shape {'x'.join(map(str, shape))} of input {inp!r} "
                                        f"does not fit its shape {list(ispec.dims)}")
        _check_named_dims_agree(prof, spec, src, name, fld)
        profiles[pname] = prof
    return profiles


def _check_named_dims_agree(prof: Profile, spec: ModelSpec, src: str, name: str, fld: str) -> None:
    """A dimension name shared by several inputs (e.g. 'batch') must get one value in a profile."""
    for which in ("min", "opt", "max"):
        seen: dict[str, tuple[str, int]] = {}
        for inp, shape in getattr(prof, which).items():
            for d, s in zip(spec.inputs[inp].dims, shape):
                if isinstance(d, str):
                    if d in seen and seen[d][1] != s:
                        raise RegistryError(src, name, fld, f"dimension {d!r} is {seen[d][1]} for input "
                                            f"{seen[d][0]!r} but {s} for input {inp!r} in the {which} shapes")
                    seen[d] = (inp, s)


def _check_samples(samples: SampleSource, spec: ModelSpec, src: str, name: str) -> None:
    try:
        arrays, keys = read_npz(samples.path, list(spec.inputs))
    except HarnessError as exc:
        raise RegistryError(src, name, "evaluation.samples", str(exc)) from None
    _check_sample_arrays(samples, arrays, keys, spec, src, name)


def _check_sample_arrays(samples: SampleSource, data: dict[str, np.ndarray], keys: set[str], spec: ModelSpec,
                         src: str, name: str) -> None:
    missing = [i for i in spec.inputs if i not in keys]
    if missing:
        raise RegistryError(src, name, "evaluation.samples", f"{samples.path} has no array for input(s) "
                            f"{', '.join(missing)} (it has {', '.join(sorted(keys))})")
    counts = set()
    for inp, ispec in spec.inputs.items():
        arr = data[inp]
        if not np.can_cast(arr.dtype, ispec.dtype, casting="safe"):
            raise RegistryError(src, name, "evaluation.samples", f"{samples.path}: array {inp!r} has dtype "
                                f"{arr.dtype}, which does not convert safely to the input's {ispec.dtype}")
        per_sample = [d for i, d in enumerate(ispec.dims) if i != ispec.batch_axis]
        if arr.ndim != len(per_sample) + 1 or any(isinstance(d, int) and d != s for d, s in zip(per_sample, arr.shape[1:])):
            raise RegistryError(src, name, "evaluation.samples", f"{samples.path}: array {inp!r} has shape "
                                f"{arr.shape}; expected (samples, {', '.join(map(str, per_sample))})")
        counts.add(arr.shape[0])
    if len(counts) != 1:
        raise RegistryError(src, name, "evaluation.samples", f"{samples.path}: inputs have different sample "
                            f"counts {sorted(counts)}")


def _parse_budgets(raw: Any, src: str, model: str | None, fld: str) -> dict[str, list[Budget]]:
    if not isinstance(raw, dict):
        raise RegistryError(src, model, fld, "must be a table: recipe name -> list of budgets")
    out = {}
    for recipe, items in raw.items():
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            raise RegistryError(src, model, f"{fld}.{recipe}", "must be a list of budget strings")
        parsed = []
        for text in items:
            try:
                parsed.append(Budget.parse(text))
            except ValueError as exc:
                raise RegistryError(src, model, f"{fld}.{recipe}", str(exc)) from None
        out[recipe] = parsed
    return out


def _parse_known(raw: Any, src: str, model: str, fld: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise RegistryError(src, model, fld, "must be a table: recipe name (or kind) = \"why it fails\"")
    return dict(raw)


def _parse_scopes(raw: Any, src: str, model: str) -> list[Scope]:
    """``[[models.NAME.where]]`` blocks: backends, a device condition, and the budgets / known failures that
    hold there."""
    if not isinstance(raw, list):
        raise RegistryError(src, model, "where", "must be an array of tables: [[models.NAME.where]]")
    scopes = []
    for i, block in enumerate(raw):
        fld = f"where[{i}]"
        _only_keys(block, {"backends", "device", "why", "budgets", "known_failures"}, src, model, fld)
        backends = block.get("backends", [])
        if isinstance(backends, str):
            backends = [backends]
        if not isinstance(backends, list) or not all(isinstance(b, str) and b for b in backends):
            raise RegistryError(src, model, f"{fld}.backends", f"must be a list of backend names, got {backends!r}")
        device = None
        if "device" in block:
            try:
                device = DeviceExpr.parse(block["device"])
            except ConditionError as exc:
                raise RegistryError(src, model, f"{fld}.device", str(exc)) from None
        if not backends and device is None:
            raise RegistryError(src, model, fld, "names neither backends nor a device condition: it would hold "
                                "everywhere; put its entries in the model's own budgets / known_failures instead")
        budgets = _parse_budgets(block.get("budgets", {}), src, model, f"{fld}.budgets")
        known = _parse_known(block.get("known_failures", {}), src, model, f"{fld}.known_failures")
        if not budgets and not known:
            raise RegistryError(src, model, fld, "sets neither budgets nor known_failures")
        why = block.get("why", "")
        if not isinstance(why, str):
            raise RegistryError(src, model, f"{fld}.why", f"must be a string, got {why!r}")
        scopes.append(Scope(Condition(tuple(backends), device), budgets, known, why))
    return scopes


def _recipe_names(raw: Any, src: str, model: str | None, fld: str) -> list[str]:
    """A list of recipe names (whether each names a recipe is checked once the recipes are known: preflight)."""
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        raise RegistryError(src, model, fld, f"must be a list of recipe names, e.g. [\"fp32\", \"fp16\"], got {raw!r}")
    return list(raw)


def _check_budget_outputs(own: dict[str, list[Budget]], defaults: dict[str, list[Budget]], scopes: list[Scope],
                          outputs: list[str], src: str, model: str) -> None:
    """A budget that names an output ([OUTPUT]) must name one of the model's."""
    tables = [(f"budgets.{r}", b) for r, b in own.items()]
    tables += [(f"defaults.budgets.{r}", b) for r, b in defaults.items() if r not in own]
    tables += [(f"where[{i}].budgets.{r}", b) for i, sc in enumerate(scopes) for r, b in sc.budgets.items()]
    for fld, budgets in tables:
        for b in budgets:
            if b.output is not None and b.output not in outputs:
                raise RegistryError(src, model, fld, f"budget {b.label!r} names output {b.output!r}; the model's "
                                    f"outputs are {', '.join(outputs)}")


def _only_keys(entry: Any, allowed: set[str], src: str, model: str | None, fld: str) -> None:
    if not isinstance(entry, dict):
        raise RegistryError(src, model, fld or None, "must be a table")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        where = f"{fld}.{unknown[0]}" if fld else unknown[0]
        raise RegistryError(src, model, where, f"unknown field; allowed here: {', '.join(sorted(allowed))}")


def _positive_int(value: Any, src: str, model: str, fld: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RegistryError(src, model, fld, f"must be a positive integer, got {value!r}")
    return value

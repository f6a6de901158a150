"""The model registry's TOML (``fixtures/models.toml``, or the user's own) read into :mod:`harness.spec` objects.

A user adds a model by adding an entry; no code. Every field is checked against the ONNX file when the
registry loads, and a bad entry raises :class:`~harness.errors.RegistryError` naming the registry file,
the model and the field. See ``fixtures/models.toml`` for the annotated format.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .budgets import CHECKS, Budget, default_budgets, default_check_bounds
from .conditions import Condition, ConditionError, DeviceExpr
from .errors import ProfileError, RegistryError
from .model_io import OnnxFacts, check_ir_version, check_onnx, only_keys, parse_inputs, parse_outputs
from .profiles import Profile, Shape, parse_shapes
from .sample_file import check_samples
from .shape_cases import DEFAULT as DEFAULT_SHAPES
from .shape_cases import RESERVED_SHAPE_NAMES
from .spec import (
    BUILTIN,
    DEFAULT_RECIPES,
    MODEL,
    REGISTRY_DEFAULTS,
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
    only_keys(data, {"defaults", "recipes", "models", "stations"}, src, None, "")
    defaults = data.get("defaults", {})
    only_keys(defaults, {"recipes", "perf_recipes", "budgets", *CHECKS}, src, None, "defaults")
    default_budgets_raw = _parse_budgets(defaults.get("budgets", {}), src, None, "defaults.budgets")
    builtin_checks = default_check_bounds()
    check_layers = {check: [(BUILTIN, builtin_checks[check]),
                            (REGISTRY_DEFAULTS, _parse_budgets(defaults.get(check, {}), src, None, f"defaults.{check}"))]
                    for check in CHECKS}
    recipes = data.get("recipes", {})
    if not isinstance(recipes, dict):
        raise RegistryError(src, None, "recipes", "must be a table of named recipes")
    default_recipes = _recipe_names(defaults.get("recipes", list(DEFAULT_RECIPES)), src, None, "defaults.recipes")
    if defaults.get("perf_recipes") is not None:
        _recipe_names(defaults["perf_recipes"], src, None, "defaults.perf_recipes")
    layers = [(BUILTIN, default_budgets()), (REGISTRY_DEFAULTS, default_budgets_raw)]
    models_raw = data.get("models", {})
    if not models_raw:
        raise RegistryError(src, None, "models", "the registry defines no models")
    models = {}
    for name, entry in models_raw.items():
        if not isinstance(entry, dict):
            raise RegistryError(src, name, None, "must be a table")
        models[name] = _parse_model(name, entry, path.parent, src, layers)
        models[name].check_bounds = {
            check: [*layers_, (MODEL, _parse_budgets(entry.get(check, {}), src, name, check))]
            for check, layers_ in check_layers.items()}
    perf_recipes = defaults.get("perf_recipes")
    stations = parse_stations(data.get("stations", {}), models, src)
    return Registry(path, models, recipes, list(default_recipes), list(perf_recipes) if perf_recipes else None,
                    stations=stations, default_budgets=default_budgets_raw)


_MODEL_KEYS = {"path", "package", "sha256", "reference", "description", "inputs", "outputs", "profiles",
               "budgets", "evaluation", "calibration", "recipes", "known_failures", "where", "shapes", *CHECKS}


def _parse_model(name: str, entry: dict, base: Path, src: str,
                 default_budgets: list[tuple[str, dict[str, list[Budget]]]]) -> ModelSpec:
    only_keys(entry, _MODEL_KEYS, src, name, "")
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
    budgets = _parse_budgets(entry.get("budgets", {}), src, name, "budgets")
    known = _parse_known(entry.get("known_failures", {}), src, name, "known_failures")
    scopes = _parse_scopes(entry.get("where", []), src, name)

    evaluation = entry.get("evaluation", {})
    only_keys(evaluation, {"size", "seed", "samples"}, src, name, "evaluation")
    calibration = entry.get("calibration", {})
    only_keys(calibration, {"size", "source"}, src, name, "calibration")
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
        default_budgets=default_budgets,
    )
    if unavailable is not None:
        return spec
    facts = OnnxFacts(model_path, src, name)
    check_ir_version(facts, src, name)
    check_onnx(facts, src, name)
    if reference_path is not None:
        ref = OnnxFacts(reference_path, src, name, "reference")
        check_ir_version(ref, src, name, "reference")
        check_onnx(ref, src, name, "reference")
        if set(ref.inputs) != set(facts.inputs) or set(ref.outputs) != set(facts.outputs):
            raise RegistryError(src, name, "reference", f"{reference_path.name} has inputs {sorted(ref.inputs)} and "
                                f"outputs {sorted(ref.outputs)}; the model has {sorted(facts.inputs)} and "
                                f"{sorted(facts.outputs)}")
    spec.inputs = parse_inputs(entry.get("inputs", {}), facts, src, name)
    spec.outputs, spec.output_batch_axes, spec.explicit_output_axes = parse_outputs(
        entry.get("outputs", {}), facts, spec, src, name)
    spec.declared_outputs = {out: dims for out, (_, dims) in facts.outputs.items() if dims is not None}
    _check_budget_outputs(budgets, dict(default_budgets)[REGISTRY_DEFAULTS], scopes, list(facts.outputs), src, name)
    spec.profiles = _parse_profiles(entry.get("profiles", {}), spec, src, name)
    if "shapes" in entry:
        spec.shapes = _parse_shape_selection(entry["shapes"], spec, src, name)
    if samples is not None:
        check_samples(samples, spec, facts, src, name)
    elif any(cfg.labels for cfg in spec.outputs.values()):
        out = next(o for o, cfg in spec.outputs.items() if cfg.labels)
        raise RegistryError(src, name, f"outputs.{out}.labels", "labels come from the real samples: set "
                            "evaluation.samples to a .npz holding them")
    _check_budget_metrics(spec, src, name)
    return spec


def _check_budget_metrics(spec: ModelSpec, src: str, name: str) -> None:
    """A model's budgets name metrics its outputs compute (class and task metrics are enabled per output)."""
    tables = [("budgets", spec.budgets)] + [(f"where[{i}].budgets", s.budgets) for i, s in enumerate(spec.scopes)]
    for fld, table in tables:
        for recipe, budgets in table.items():
            for b in budgets:
                outputs = [b.output] if b.output else list(spec.outputs)
                if not any(b.metric in spec.outputs[o].metric_names() for o in outputs if o in spec.outputs):
                    where = f"output {b.output!r}" if b.output else "no output"
                    raise RegistryError(src, name, f"{fld}.{recipe}", f"budget {b.label!r}: {where} computes "
                                        f"{b.metric}; {_how_to_enable(b.metric)}")


def _how_to_enable(metric: str) -> str:
    if metric in ("top1", "top5"):
        return "set class_axis for the output"
    if metric.startswith("label_"):
        return "set labels (an array of the samples file) and the task metric it scores for the output"
    return f"add {metric!r} to the output's metrics"


def _parse_profiles(raw: dict, spec: ModelSpec, src: str, name: str) -> dict[str, Profile]:
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(src, name, "profiles", "give at least one shape profile, e.g. "
                            "dynamic = { min = \"x:1x3\", opt = \"x:8x3\", max = \"x:32x3\" }")
    profiles = {}
    for pname, entry in raw.items():
        fld = f"profiles.{pname}"
        if not isinstance(entry, dict):
            raise RegistryError(src, name, fld, "must be a table with 'shapes' or 'min'/'opt'/'max'")
        only_keys(entry, {"shapes", "min", "opt", "max", "extra"}, src, name, fld)
        entry = dict(entry)
        extra_raw = entry.pop("extra", {})
        try:
            prof = Profile.from_strings(pname, source=f"{src}: model {name!r}", **entry)
        except ProfileError as exc:
            raise RegistryError(src, name, fld, str(exc).split(": ", 2)[-1]) from None
        for inp in prof.inputs:
            if inp not in spec.inputs:
                raise RegistryError(src, name, fld, f"unknown input name {inp!r}; the model's inputs are "
                                    f"{', '.join(spec.inputs)}")
        prof = _derive_shapes(prof, spec)
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
        if extra_raw:
            prof = replace(prof, extra=_parse_extra_shapes(extra_raw, prof, spec, src, name, f"{fld}.extra"))
        profiles[pname] = prof
    return profiles


def _parse_shape_selection(raw: Any, spec: ModelSpec, src: str, name: str) -> list[str]:
    """``shapes = ["opt", "max"]``: the points of its profiles a model's accuracy gates run at."""
    known = [*DEFAULT_SHAPES, *dict.fromkeys(n for p in spec.profiles.values() for n in p.extra)]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise RegistryError(src, name, "shapes", f"must be a list of shape names ({', '.join(known)}), got {raw!r}")
    bad = [x for x in raw if x not in known]
    if bad:
        raise RegistryError(src, name, "shapes", f"{', '.join(bad)} names no shape of its profiles; give "
                            f"{', '.join(known)}")
    return list(raw)


_SHAPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _parse_extra_shapes(raw: Any, prof: Profile, spec: ModelSpec, src: str, name: str,
                        fld: str) -> dict[str, dict[str, Shape]]:
    """``extra = { wide = "x:4x3x48x960" }``: named shapes inside the profile that the accuracy gates also test."""
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(src, name, fld, "must be a table of named shapes, e.g. extra = { wide = \"x:4x3x48x960\" }")
    out: dict[str, dict[str, Shape]] = {}
    for key, text in raw.items():
        if not _SHAPE_NAME.match(key) or key in RESERVED_SHAPE_NAMES:
            raise RegistryError(src, name, f"{fld}.{key}", "a shape's name is a word of letters, digits and _ (it "
                                f"becomes part of the case id), other than {', '.join(RESERVED_SHAPE_NAMES)}")
        try:
            shapes = parse_shapes(text, where="shape")
            unknown = sorted(set(shapes) - set(prof.opt))
            if unknown:
                raise ProfileError(f"names input(s) {', '.join(unknown)} that the profile does not: it has "
                                   f"{', '.join(prof.opt)}")
            written = Profile(prof.name, shapes, shapes, shapes)
            derived = _derive_shapes(written, spec).opt
            missing = sorted(set(prof.opt) - set(derived))
            if missing:
                raise ProfileError(f"gives no shape for input(s) {', '.join(missing)}")
            prof.check(derived)
        except ProfileError as exc:
            raise RegistryError(src, name, f"{fld}.{key}", str(exc).split(": ", 1)[-1]
                                if str(exc).startswith("shape") else str(exc)) from None
        out[key] = derived
    return out


def _derive_shapes(prof: Profile, spec: ModelSpec) -> Profile:
    """Shapes for inputs a profile leaves out whose dynamic dimensions the other inputs name (a recurrent state
    ``[2, batch, 128]`` follows the batch): the state's batch shape follows without being written."""
    derived: dict[str, dict[str, Shape]] = {"min": dict(prof.min), "opt": dict(prof.opt), "max": dict(prof.max)}
    for shapes in derived.values():
        bound: dict[str, int] = {}
        for inp, shape in shapes.items():
            for d, size in zip(spec.inputs[inp].dims, shape):
                if isinstance(d, str):
                    bound.setdefault(d, size)
        for inp, ispec in spec.inputs.items():
            dynamic = [d for d in ispec.dims if isinstance(d, str)]
            if inp not in shapes and dynamic and all(d in bound for d in dynamic):
                shapes[inp] = tuple(bound[d] if isinstance(d, str) else int(d) for d in ispec.dims)
    if derived["opt"].keys() == prof.opt.keys():
        return prof
    return Profile(prof.name, derived["min"], derived["opt"], derived["max"], fixed=prof.fixed, source=prof.source)


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
        only_keys(block, {"backends", "device", "why", "budgets", "known_failures"}, src, model, fld)
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
def _positive_int(value: Any, src: str, model: str, fld: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RegistryError(src, model, fld, f"must be a positive integer, got {value!r}")
    return value

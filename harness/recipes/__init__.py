"""Precision recipes: ONNX -> ONNX transforms, cached.

Precision is a property of the ONNX file, not a builder flag (TensorRT 11 and TensorRT-RTX accept only
strongly typed networks). A recipe turns the source model into another ONNX file once; every backend then
builds that file, so one INT8 artifact is tested on ONNX Runtime CPU, CUDA and TensorRT alike.

Recipes are named in the registry (``[recipes.NAME]``, with ``kind`` and parameters) or taken from
:data:`BUILTIN`. Their parameters are part of the artifact's cache key and of every result row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache, Entry
from ..errors import RecipeError, RegistryError
from ..spec import ModelSpec, Registry

KINDS = ("fp32", "fp16", "bf16", "int8", "trt_legacy")


class RecipeWarning(UserWarning):
    """A recipe produced something usable but suspicious (it quantized nothing, clamped weights...)."""

BUILTIN: dict[str, dict[str, Any]] = {
    "fp32": {"kind": "fp32"},
    "fp16": {"kind": "fp16"},
    "bf16": {"kind": "bf16"},
    "int8-minmax": {"kind": "int8", "method": "minmax"},
    "int8-entropy": {"kind": "int8", "method": "entropy"},
    "int8-percentile": {"kind": "int8", "method": "percentile"},
    "int8-minmax-pc": {"kind": "int8", "method": "minmax", "per_channel": True},
    # 7-bit weights: ONNX Runtime's x86 int8 kernels without VNNI cannot saturate on them
    "int8-minmax-pc-w7": {"kind": "int8", "method": "minmax", "per_channel": True, "reduce_range": True},
    "int8-minmax-generated": {"kind": "int8", "method": "minmax", "calibration": "generated"},
    "trt10-legacy-fp16": {"kind": "trt_legacy", "precision": "fp16"},
    "trt10-legacy-int8": {"kind": "trt_legacy", "precision": "int8", "calibrator": "entropy"},
}
# bump when a transform changes what it writes: every cached artifact of that kind is then rebuilt
RECIPE_VERSION = {"fp16": 1, "bf16": 1, "int8": 2}


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.options}


@dataclass
class RecipeArtifact:
    """A recipe's output for one model: the ONNX file every backend builds, and what the recipe did."""

    recipe: Recipe
    path: Path
    model_hash: str  # hash of the artifact's bytes (the source model's, for fp32)
    info: dict[str, Any] = field(default_factory=dict)
    entry: Entry | None = None
    # for recipes applied at build time (TensorRT 10's weak typing): options for the builder, and the
    # calibration samples a builder-side INT8 calibrator reads
    build_options: dict[str, Any] = field(default_factory=dict)
    calibration: Any = None

    @property
    def seconds(self) -> float:
        return self.entry.build_seconds if self.entry else 0.0

    @property
    def hit(self) -> bool:
        return self.entry.hit if self.entry else True


def recipe_from_table(name: str, table: Mapping[str, Any], source: str) -> Recipe:
    table = dict(table)
    kind = table.pop("kind", None)
    if kind not in KINDS:
        raise RegistryError(source, None, f"recipes.{name}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    from .options import check_options

    try:
        params = check_options(kind, table)
    except ValueError as exc:
        raise RegistryError(source, None, f"recipes.{name}", str(exc)) from None
    return Recipe(name, kind, tuple(sorted(params.items())))


def all_recipes(registry: Registry) -> dict[str, Recipe]:
    tables = dict(BUILTIN)
    tables.update(registry.recipes)
    return {name: recipe_from_table(name, t, str(registry.path)) for name, t in tables.items()}


def apply_recipe(recipe: Recipe, spec: ModelSpec, cache: Cache) -> RecipeArtifact:
    """The recipe's ONNX for ``spec``: built once and cached; fp32 is the source model itself."""
    if recipe.kind == "fp32":
        return RecipeArtifact(recipe, spec.path, spec.model_bytes_hash(), {"transform": "none (source model)"})
    if recipe.kind == "trt_legacy":
        params = recipe.options
        calibration = calibration_set(spec, params) if params["precision"] == "int8" else None
        info: dict[str, Any] = {"transform": "none: TensorRT 10 weak typing at build time"}
        if calibration is not None:
            info.update(calibration_source="real" if calibration.real else "generated",
                        calibration_samples=calibration.count)
        return RecipeArtifact(recipe, spec.path, spec.model_bytes_hash(), info,
                              build_options={"legacy_precision": params["precision"],
                                             "legacy_calibrator": params["calibrator"]},
                              calibration=calibration)
    parts, calibration = recipe_key_parts(recipe, spec)

    def build(path: Path) -> dict[str, Any]:
        from .validate import validate

        info = _transform(recipe, spec, path, calibration)
        info["validation"] = validate(path, spec)
        return info

    entry = cache.get_or_build("recipes", f"{spec.name}/{recipe.name}", parts, "model.onnx", build)
    info = entry.info
    if info.get("warning"):
        warnings.warn(RecipeWarning(f"recipe {recipe.name!r}: {info['warning']}"), stacklevel=2)
    if calibration is not None:
        info = {**info, "calibration_source": "real" if calibration.real else "generated",
                "calibration_samples": calibration.count}
    return RecipeArtifact(recipe, entry.path, entry.meta["sha256"], info, entry)


def recipe_key_parts(recipe: Recipe, spec: ModelSpec) -> tuple[dict[str, Any], Any]:
    """What a recipe artifact depends on (its cache key parts), and its calibration set if it has one."""
    import onnx

    parts: dict[str, Any] = {
        "model": spec.model_bytes_hash(),
        "recipe": recipe.kind,
        "params": recipe.options,
        "recipe_version": RECIPE_VERSION[recipe.kind],
        "onnx": onnx.__version__,
    }
    calibration = None
    if recipe.kind == "int8":
        import onnxruntime

        calibration = calibration_set(spec, recipe.options)
        parts["onnxruntime"] = onnxruntime.__version__
        parts["calibration"] = calibration.key()
    return parts, calibration


def calibration_set(spec: ModelSpec, params: dict[str, Any]) -> Any:
    """The calibration samples of an int8 recipe (real ones reserved in the registry, or generated)."""
    from ..data import SampleSet

    source = params["calibration"]
    if source == "auto":
        source = spec.calibration_source
    if source == "real" and spec.samples is None:
        raise RecipeError(f"model {spec.name!r} has no real samples to calibrate on (set evaluation.samples "
                          "in the registry, or calibration = \"generated\" in the recipe)")
    profile = next(iter(spec.profiles.values()))
    size = int(params["calibration_size"]) or spec.calibration_size
    if source == "real" or (source == "auto" and spec.samples is not None):
        size = min(size, spec.calibration_size)  # only the reserved samples
    return SampleSet(spec, profile, size=size, purpose="calibration", source=source)


def _transform(recipe: Recipe, spec: ModelSpec, path: Path, calibration: Any) -> dict[str, Any]:
    import onnx

    params = recipe.options
    model = onnx.load(str(spec.path))
    if recipe.kind in ("fp16", "bf16"):
        from .float16 import convert_float
        from .graph import opset_of, upgrade_opset

        info: dict[str, Any] = {}
        target = int(params["opset"])
        if target and opset_of(model) < target:
            try:
                model = upgrade_opset(model, target)
                info["opset_upgraded_to"] = target
            except Exception as exc:  # keep the model's opset: ops without a bf16 schema there stay FP32
                info["opset_upgrade_failed"] = f"opset {opset_of(model)} -> {target}: {str(exc)[:200]}"
        converted, conv_info = convert_float(model, recipe.kind, block_ops=tuple(params["block_ops"]),
                                             fold=bool(params["fold"]))
        info.update(conv_info)
        onnx.save(converted, str(path))
        return info
    if recipe.kind == "int8":
        from .int8 import quantize

        # equal batches: ONNX Runtime's histogram calibrators stack them and fail on a short last batch
        batch = max(d for d in range(1, min(calibration.batch, 8) + 1) if calibration.count % d == 0)
        feeds = (b.feeds for b in calibration.batches(batch))
        return quantize(model, path, feeds, model_name=spec.name, method=params["method"],
                        per_channel=bool(params["per_channel"]), op_types=list(params["op_types"]),
                        percentile=float(params.get("percentile", 99.999)), preprocess=bool(params["preprocess"]),
                        reduce_range=bool(params["reduce_range"]))
    raise RecipeError(f"recipe {recipe.name!r}: unknown kind {recipe.kind!r}")

"""Precision recipes: ONNX -> ONNX transforms, cached.

Precision is a property of the ONNX file, not a builder flag (TensorRT 11 and TensorRT-RTX accept only
strongly typed networks). A recipe turns the source model into another ONNX file once; every backend then
builds that file, so one INT8 artifact is tested on ONNX Runtime CPU, CUDA and TensorRT alike.

Recipes are named in the registry (``[recipes.NAME]``, with ``kind`` and parameters) or taken from
:data:`BUILTIN`. Their parameters are part of the artifact's cache key and of every result row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
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
# fp16/bf16 2: subgraphs converted inside, keep_fp32; int8 3: valid order around subgraphs, no-op artifacts,
# streamed histograms, no int32-bias weight adjustment
RECIPE_VERSION = {"fp16": 2, "bf16": 2, "int8": 3}


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
        info["validation"] = validate(path, spec, recipe.name)
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

    feeds = None
    if recipe.kind == "int8":
        # equal batches: ONNX Runtime's histogram calibrators stack them and fail on a short last batch
        batch = max(d for d in range(1, min(calibration.batch, 8) + 1) if calibration.count % d == 0)
        feeds = (b.feeds for b in calibration.batches(batch))
    model, info = transform_model(onnx.load(str(spec.path)), recipe.kind, recipe.options, calibration=feeds,
                                  model_name=spec.name, recipe_name=recipe.name)
    onnx.save(model, str(path))
    return info


def transform_model(model: Any, kind: str, params: Mapping[str, Any], *, calibration: Iterable[dict[str, Any]] | None = None,
                    model_name: str = "model", recipe_name: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A precision transform as a function: ``model`` (an ``onnx.ModelProto``) with a recipe kind's parameters
    (:mod:`harness.recipes.options`, ``keep_fp32`` included; missing ones take their defaults) -> the artifact
    and what was done. ``info["nodes"]`` lists, by node name, the nodes converted (fp16 / bf16) or quantized
    (int8) and those kept in FP32; ``info["no_op"]`` says why, when nothing was. int8 needs ``calibration``:
    batches of feeds. Nothing is cached or validated here (:func:`apply_recipe` does both)."""
    import onnx

    from .options import check_options

    params = check_options(kind, {k: v for k, v in params.items() if k != "kind"})
    name = recipe_name or kind
    if kind in ("fp16", "bf16"):
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
        converted, conv_info = convert_float(model, kind, block_ops=tuple(params["block_ops"]),
                                             keep_fp32=tuple(params["keep_fp32"]), fold=bool(params["fold"]))
        info.update(conv_info)
        return converted, info
    if kind == "int8":
        import tempfile

        from .int8 import quantize

        if calibration is None:
            raise RecipeError(f"recipe {name!r} on model {model_name!r}: int8 needs calibration batches")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            info = quantize(model, out, iter(calibration), model_name=model_name, recipe_name=name,
                            method=params["method"], per_channel=bool(params["per_channel"]),
                            op_types=list(params["op_types"]), keep_fp32=list(params["keep_fp32"]),
                            percentile=float(params.get("percentile", 99.999)), preprocess=bool(params["preprocess"]),
                            reduce_range=bool(params["reduce_range"]))
            artifact = onnx.load(str(out))
        info["nodes"] = _qdq_nodes(artifact)
        return artifact, info
    raise RecipeError(f"recipe {name!r}: kind {kind!r} has no ONNX transform")


def _qdq_nodes(model: Any) -> dict[str, list[str]]:
    from .graph import node_label, walk_nodes

    dq = {n.output[0] for n in walk_nodes(model.graph) if n.op_type == "DequantizeLinear"}
    qdq = ("QuantizeLinear", "DequantizeLinear")
    nodes = [n for n in walk_nodes(model.graph) if n.op_type not in qdq]
    quantized = [n for n in nodes if any(i in dq for i in n.input)]
    return {"quantized": [node_label(n) for n in quantized],
            "kept_fp32": [node_label(n) for n in nodes if n not in quantized]}

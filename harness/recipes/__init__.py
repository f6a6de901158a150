"""Precision recipes: ONNX -> ONNX transforms, cached.

Precision is a property of the ONNX file, not a builder flag (TensorRT 11 and TensorRT-RTX accept only
strongly typed networks). A recipe turns the source model into another ONNX file once; every backend then
builds that file, so one INT8 artifact is tested on ONNX Runtime CPU, CUDA and TensorRT alike.

Recipes are named in the registry (``[recipes.NAME]``, with ``kind`` and parameters) or taken from
:data:`BUILTIN`. Their parameters are part of the artifact's cache key and of every result row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Cache, Entry
from ..errors import RecipeError, RegistryError
from ..spec import ModelSpec, Registry

KINDS = ("fp32", "fp16", "bf16", "int8")

BUILTIN: dict[str, dict[str, Any]] = {
    "fp32": {"kind": "fp32"},
}


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
    if recipe.kind == "fp32" and not recipe.params:
        return RecipeArtifact(recipe, spec.path, spec.model_bytes_hash(), {"transform": "none (source model)"})
    raise RecipeError(f"recipe {recipe.name!r} ({recipe.kind}) is not available")

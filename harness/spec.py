"""What the registry describes: models (inputs, outputs, profiles, samples), budgets, the expectations
scoped to where they hold, and stations (several models run together on every frame). Plain data; :mod:`harness.registry` reads and validates the TOML into it.

Expectations (budgets and known failures) are looked up per case, in layers from the most general: the
built-in defaults (:data:`harness.budgets.DEFAULT_BUDGETS`), the registry's ``[defaults.budgets]``, the
model's own, then each ``[[models.NAME.where]]`` block whose condition holds for the case's backend and
device, in order. Within a layer an entry named after the recipe comes before one for its kind; a later
layer that has an entry for the recipe replaces what the earlier ones say.

Batch axes: an input's ``batch_axis`` says where its samples are stacked; an input without one is *shared*:
one value per batch (a sample rate, a fixed initial state), broadcast by the model, taken from the registry's
``value`` or the real samples. An input with a batch axis and a ``value`` has that value in every sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .budgets import Budget, OutputConfig
from .cache import digest
from .conditions import Condition
from .errors import RegistryError
from .profiles import Profile

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}
# ONNX TensorProto element types -> numpy
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
               11: np.float64, 16: "bfloat16"}
DISTRIBUTIONS = ("uniform", "normal", "smooth", "zipf")

Dim = int | str
# what a registry without [defaults] recipes gates: every precision, and each int8 calibration method
DEFAULT_RECIPES = ("fp32", "fp16", "bf16", "int8-minmax", "int8-entropy", "int8-percentile", "int8-minmax-pc")


@dataclass(frozen=True)
class InputSpec:
    """One model input: dtype, shape with named dynamic dims, and how to draw values for it."""

    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...]
    low: float
    high: float
    distribution: str = "uniform"
    batch_axis: int | None = 0
    # real samples stored in another form (uint8 images) map to the input as stored * scale + offset
    sample_scale: float = 1.0
    sample_offset: float = 0.0
    # the registry's value for every sample (a number fills the sample's shape); None: drawn or real samples
    value: np.ndarray | None = field(default=None, compare=False)

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(self.dtype, np.integer) or self.dtype == np.bool_

    @property
    def shared(self) -> bool:
        """One value per batch, not per sample: the input has no batch axis."""
        return self.batch_axis is None


@dataclass(frozen=True)
class SampleSource:
    """Real samples in a ``.npz`` file: one array per input, samples along axis 0."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class Scope:
    """One ``[[models.NAME.where]]`` block: budgets and known failures that hold only where its condition does
    (e.g. ONNX Runtime CPU on x86 without VNNI, whose int8 kernels saturate)."""

    condition: Condition
    budgets: dict[str, list[Budget]]
    known_failures: dict[str, str]
    why: str = ""

    def describe(self) -> str:
        return self.condition.describe() + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class Expectation:
    """What a case is held to: its budgets, whether it is a known failure (and why), which scopes applied, and
    where the budgets come from (``source``: "built-in defaults", "registry defaults", "model" or a scope)."""

    budgets: list[Budget]
    known_failure: str | None
    scopes: tuple[str, ...] = ()
    source: str = ""


BUILTIN, REGISTRY_DEFAULTS, MODEL = "built-in defaults", "registry defaults", "model"


def _by_recipe(table: dict[str, Any], recipe_name: str, recipe_kind: str) -> Any:
    """A table's entry for a recipe: the one named after it, else the one for its kind, else None."""
    if recipe_name in table:
        return table[recipe_name]
    return table.get(recipe_kind)


@dataclass
class ModelSpec:
    name: str
    path: Path
    source: str  # the registry file, for messages
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputConfig]
    output_batch_axes: dict[str, int | None]
    profiles: dict[str, Profile]
    budgets: dict[str, list[Budget]]  # the model's own
    eval_size: int = 64
    eval_seed: int = 0
    samples: SampleSource | None = None
    calibration_size: int = 32
    calibration_source: str = "auto"  # real samples when the model has them, else generated
    recipes: list[str] | None = None
    shapes: list[str] | None = None  # the profiles' points its accuracy gates run at (None: all; --shapes wins)
    description: str = ""
    unavailable: str | None = None  # why the model cannot be used here (e.g. its package is missing)
    sha256: str = ""
    reference_path: Path | None = None  # the FP32 model the reference comes from (default: path)
    # recipe name (or kind) -> why its gate is known to fail: the case is an expected failure (strict)
    known_failures: dict[str, str] = field(default_factory=dict)
    scopes: list[Scope] = field(default_factory=list)
    # the budgets below the model's own, most general first: (source, budgets by recipe name or kind)
    default_budgets: list[tuple[str, dict[str, list[Budget]]]] = field(default_factory=list)
    # the output shapes the ONNX file declares (None for an unnamed dynamic dimension); the real ones come
    # from a run (harness.layout), which also settles the output batch axes that the registry did not fix
    declared_outputs: dict[str, tuple[Dim | None, ...]] = field(default_factory=dict)
    explicit_output_axes: frozenset[str] = frozenset()  # outputs whose batch_axis the registry gives
    # batch consistency and determinism bounds (harness.budgets.CHECKS): per check, layers most general first
    # (built-in, registry defaults, the model's own), each by recipe name or kind
    check_bounds: dict[str, list[tuple[str, dict[str, list[Budget]]]]] = field(default_factory=dict)

    @property
    def reference_model(self) -> Path:
        return self.reference_path or self.path

    def with_output_batch_axes(self, axes: dict[str, int | None]) -> ModelSpec:
        return replace(self, output_batch_axes=dict(axes))

    @property
    def batch_dim(self) -> str | None:
        for spec in self.inputs.values():
            if spec.batch_axis is not None and isinstance(spec.dims[spec.batch_axis], str):
                return str(spec.dims[spec.batch_axis])
        return None

    def model_bytes_hash(self) -> str:
        if not self.sha256:
            self.sha256 = file_sha256(self.path)
        return self.sha256

    def budgets_for(self, recipe_name: str, recipe_kind: str) -> list[Budget]:
        """The budgets for a recipe whatever the device: the model's own (named after it, else its kind's), else
        the defaults'."""
        budgets, _ = self._unscoped_budgets(recipe_name, recipe_kind)
        return list(budgets or [])

    def _unscoped_budgets(self, recipe_name: str, recipe_kind: str) -> tuple[list[Budget] | None, str]:
        for source, table in [(MODEL, self.budgets), *reversed(self.default_budgets)]:
            found = _by_recipe(table, recipe_name, recipe_kind)
            if found is not None:
                return found, source
        return None, ""

    def check_budgets(self, check: str, recipe_name: str, recipe_kind: str) -> tuple[list[Budget], str]:
        """The bounds of a self-check (``consistency`` or ``determinism``) for a recipe, and where they came from:
        the most specific layer with an entry for the recipe's name, else its kind."""
        for source, table in reversed(self.check_bounds.get(check, [])):
            found = _by_recipe(table, recipe_name, recipe_kind)
            if found is not None:
                return list(found), source
        return [], ""

    def expectation(self, recipe_name: str, recipe_kind: str, backend: str, words: Iterable[str]) -> Expectation:
        """Budgets and known failure for a case on ``backend`` whose device has ``words`` (conditions.py)."""
        words = set(words)
        budgets, source = self._unscoped_budgets(recipe_name, recipe_kind)
        known = _by_recipe(self.known_failures, recipe_name, recipe_kind)
        applied = []
        for scope in self.scopes:
            if not scope.condition.holds(backend, words):
                continue
            scoped_budgets = _by_recipe(scope.budgets, recipe_name, recipe_kind)
            scoped_known = _by_recipe(scope.known_failures, recipe_name, recipe_kind)
            if scoped_budgets is not None:
                budgets, source = scoped_budgets, f"where {scope.describe()}"
            if scoped_known is not None:
                known = scoped_known
            if scoped_budgets is not None or scoped_known is not None:
                applied.append(scope.describe())
        return Expectation(list(budgets or []), known, tuple(applied), source if budgets else "")


@dataclass(frozen=True)
class StationMember:
    """One model of a station, under a recipe and a profile (None: the station's, else the model's default)."""

    model: str
    recipe: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class StationSpec:
    """``[stations.NAME]``: models that run on every frame, one after another or together (repeats allowed: two
    copies of a detector are two members). Every member runs the frame's batch; ``fps`` is a frame rate the
    station must hold (its p99 cycle time within 1 / fps), reported, never gated."""

    name: str
    members: tuple[StationMember, ...]
    source: str  # the registry file, for messages
    batches: tuple[int, ...] = ()  # () : --perf-batches, else batch 1
    fps: float | None = None
    recipe: str | None = None  # for members that name none
    profile: str | None = None
    description: str = ""
    members_key: str = "models"  # how the registry spelled them ("models" or "members"), for messages

    @property
    def models(self) -> list[str]:
        return [m.model for m in self.members]


@dataclass
class Registry:
    path: Path
    models: dict[str, ModelSpec]
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    perf_recipes: list[str] | None = None  # the recipes perf sweeps time by default (None: all)
    # [defaults.budgets] as written (each model holds them as a layer below its own); kept to name them in messages
    default_budgets: dict[str, list[Budget]] = field(default_factory=dict)
    stations: dict[str, StationSpec] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    return digest(path)[1]


def select_models(registry: Registry, names: list[str] | None) -> list[ModelSpec]:
    if not names:
        return list(registry.models.values())
    unknown = [n for n in names if n not in registry.models]
    if unknown:
        raise RegistryError(str(registry.path), None, None, f"--models names unknown model(s) {', '.join(unknown)}; "
                            f"the registry has {', '.join(registry.models)}")
    return [registry.models[n] for n in names]

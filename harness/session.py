"""One process's view of a harness run: settings, registry, recipes, cache and its row writer.

The pytest plugin makes one per process (the controller and each xdist worker); the command line and the
benchmarks can make their own. Everything heavy is created on first use.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import BACKENDS, get_backend
from .cache import Cache
from .device_id import device_of
from .environment import environment
from .errors import HarnessError, ModeUnsupported
from .layout import Layout
from .recipes import Recipe, all_recipes
from .registry import load_registry
from .results import ROWS, RowWriter
from .rows import Row
from .spec import ModelSpec, Registry, select_models


@dataclass
class PerfSettings:
    modes: list[str] = field(default_factory=lambda: ["serial", "multistream", "threadpool"])
    batches: list[int] | None = None  # None: each profile's opt batch and 1
    concurrency: list[int] = field(default_factory=lambda: [2])
    duration: float = 0.5  # seconds measured, at least
    warmup: float = 0.2  # seconds of warm-up, discarded
    min_iters: int = 20
    max_cv: float = 0.25  # robust latency CV above which a run is unstable
    max_drift: float = 0.20  # windowed throughput drift above which a run is unstable
    max_load: float = 1.0  # other processes' runnable threads per CPU above which the host is overloaded
    sync: list[str] = field(default_factory=lambda: ["spin"])  # GPU: how the host waits (spin, block)
    resident: list[bool] = field(default_factory=lambda: [True])
    cuda_graph: list[bool] = field(default_factory=lambda: [False])
    recipes: list[str] | None = None  # None: the accuracy recipes
    profiles: list[str] | None = None
    stations: list[str] | None = None  # None: every station (with --models, those made of the selected models)
    station_modes: list[str] = field(default_factory=lambda: ["serial", "multistream", "threadpool", "merged"])
    check_requests: int = 4  # checked requests per runner during a measurement (harness.load_check); 0: none
    server_rates: list[str] = field(default_factory=lambda: ["50%", "90%", "110%"])  # server mode's offered rates
    latency_bound: str | None = None  # "p99<=20ms": server cases search the highest rate that keeps it


@dataclass
class Settings:
    registry: Path | None  # None: no registry configured (the plugin then generates no cases)
    report_dir: Path
    cache_dir: Path
    models: list[str] | None = None
    # backend names, or ["auto"]: every backend this machine can run (can build, for build cases)
    backends: list[str] = field(default_factory=lambda: ["ort_cpu"])
    recipes: list[str] | None = None
    profiles: list[str] | None = None
    eval_size: int | None = None
    rebuild: bool = False
    baseline: Path | None = None
    history: Path | None = None  # SQLite database each run's rows are appended to
    reference_device: str = "cpu"
    trt_options: dict[str, Any] = field(default_factory=dict)  # builder options for tensorrt / tensorrt_rtx
    ort_setup: dict[str, Any] = field(default_factory=dict)  # ONNX Runtime session setup over the backend's default
    perf: PerfSettings = field(default_factory=PerfSettings)
    strict_budgets: bool = False  # a case no budget applies to fails instead of passing as "unbudgeted"
    shapes: list[str] | None = None  # the profiles' points accuracy gates run at (None: min, opt, max, extra)
    # --doctor: at the end of the run, the precision doctor on the failed accuracy cases (harness.doctor)
    doctor: bool = False
    doctor_max_minutes: float = 10.0  # shared by the failed cases
    doctor_samples: int = 4  # compared node by node
    # where each option's value came from, for messages: "--profiles", "harness_profiles in pyproject.toml"
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, dest: str) -> str:
        return self.sources.get(dest, "--" + dest.replace("_", "-"))


@dataclass(frozen=True)
class AccuracyCase:
    model: str
    backend: str
    recipe: str
    profile: str
    shape: str = "opt"  # the profile's point the case runs at (harness.shape_cases): min, opt, max or an extra

    @property
    def id(self) -> str:
        suffix = "" if self.shape == "opt" else f"-{self.shape}"
        return f"{self.model}-{self.backend}-{self.recipe}-{self.profile}{suffix}"


AUTO = "auto"
NO_REGISTRY = ("no model registry: name one with harness_registry in the ini file ([tool.pytest.ini_options] in "
               "pyproject.toml) or with --registry")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class HarnessSession:
    def __init__(self, settings: Settings, *, run_id: str | None = None, worker: str = "main"):
        self.settings = settings
        self.run_id = run_id or new_run_id()
        self.worker = worker
        self._writer: RowWriter | None = None
        self._events: RowWriter | None = None
        self._layouts: dict[str, tuple[ModelSpec, Layout]] = {}
        self.last_row: Row | None = None  # the row written last (its numbers become JUnit properties)
        unknown = [b for b in settings.backends if b not in BACKENDS and b != AUTO]
        if unknown:
            raise HarnessError(f"--backends names unknown backend(s) {', '.join(unknown)}; known: {', '.join(BACKENDS)}")

    # -- lazily created parts

    @functools.cached_property
    def registry(self) -> Registry:
        if self.settings.registry is None:
            raise HarnessError(NO_REGISTRY)
        return load_registry(self.settings.registry)

    @functools.cached_property
    def recipes(self) -> dict[str, Recipe]:
        return all_recipes(self.registry)

    @functools.cached_property
    def cache(self) -> Cache:
        return Cache(self.settings.cache_dir, rebuild=self.settings.rebuild, run_id=self.run_id,
                     on_event=self._cache_event)

    @property
    def rows_dir(self) -> Path:
        return self.settings.report_dir / ROWS / self.run_id

    def write_failure(self, row: Row, exc: BaseException) -> None:
        """Write the row of a check that raised ``exc`` before it had a verdict: skipped with the backend's own
        reason where the backend cannot do the case (ModeUnsupported), otherwise an error naming the exception."""
        if isinstance(exc, ModeUnsupported):
            row.update(status="skipped", message=str(exc))
        else:
            row.update(status="error", message=f"{type(exc).__name__}: {exc}")
        self.write_row(row)

    def write_row(self, row: Row) -> None:
        """Stamp the row with this run, worker, time, machine and device, and append it to this process's file."""
        if self._writer is None:
            self._writer = RowWriter(self.rows_dir / f"{self.worker}.jsonl")
        row.run_id = row.run_id or self.run_id
        row.worker = row.worker or self.worker
        row.time = row.time or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        row.env = row.env or environment()
        if not row.device:
            # the GPU this process runs on for a GPU backend, else the host's CPU: part of the row's key
            row.device = device_of(row.env, row.backend in BACKENDS and get_backend(row.backend).on_gpu)
        self._writer.write(row.to_dict())
        self.last_row = row

    def _cache_event(self, event: dict[str, Any]) -> None:
        if self._events is None:
            self._events = RowWriter(self.rows_dir / f"{self.worker}.cache.jsonl")
        self._events.write(event)

    def close(self) -> None:
        for w in (self._writer, self._events):
            if w is not None:
                w.close()
        self._writer = self._events = None

    # -- selection

    def models(self) -> list[ModelSpec]:
        return select_models(self.registry, self.settings.models)

    def model(self, name: str) -> ModelSpec:
        if name not in self.registry.models:
            raise HarnessError(f"unknown model {name!r}; the registry {self.registry.path} has "
                               f"{', '.join(self.registry.models)}")
        return self.registry.models[name]

    def layout(self, spec: ModelSpec) -> tuple[ModelSpec, Layout]:
        """The model with its outputs' real batch axes (one FP32 run, cached), and the layout found."""
        if spec.name not in self._layouts:
            from .layout import resolve

            self._layouts[spec.name] = resolve(self.cache, spec)
        return self._layouts[spec.name]

    def recipe(self, name: str) -> Recipe:
        if name not in self.recipes:
            raise HarnessError(f"unknown recipe {name!r}; known: {', '.join(self.recipes)}")
        return self.recipes[name]

    def model_recipes(self, spec: ModelSpec, wanted: list[str] | None = None) -> list[str]:
        """The model's recipes (its registry list, or the defaults); ``wanted`` (--recipes) replaces them."""
        names = list(wanted) if wanted else (spec.recipes or self.registry.default_recipes)
        for n in names:
            self.recipe(n)
        return names

    def perf_recipes(self, spec: ModelSpec) -> list[str]:
        """The recipes perf cases time: ``--perf-recipes`` exactly, else the model's recipes (or ``--recipes``)
        that the registry's ``perf_recipes`` name."""
        ps = self.settings.perf
        if ps.recipes:
            return self.model_recipes(spec, ps.recipes)
        recipes = self.model_recipes(spec, self.settings.recipes)
        if self.registry.perf_recipes:
            recipes = [r for r in recipes if r in self.registry.perf_recipes]
        return recipes

    def runs_recipe(self, backend: str, recipe: str) -> bool:
        """Whether to generate cases of ``recipe`` on ``backend``: with ``auto`` backends, not where the backend
        has no kernels for the recipe's kind (``left_out`` says so once); a backend the user named gets its
        cases, each skipped with the reason."""
        return not self.auto_backends or get_backend(backend).unsupported_recipe(self.recipe(recipe).kind) is None

    def model_profiles(self, spec: ModelSpec, wanted: list[str] | None = None) -> list[str]:
        names = list(spec.profiles)
        return [n for n in names if n in wanted] if wanted else names

    @property
    def auto_backends(self) -> bool:
        return AUTO in self.settings.backends

    def backends(self, *, build_only: bool = False) -> list[str]:
        """The backends to generate cases for: those named, or with ``auto`` every backend that can run here
        (that can build here, for build cases)."""
        named = [b for b in self.settings.backends if b != AUTO]
        if not self.auto_backends:
            return named
        usable = [b for b in BACKENDS if self._backend_reason(b, build_only) is None]
        return list(dict.fromkeys(named + usable))

    @functools.cache  # noqa: B019 - one session per process; the answers do not change during it
    def _backend_reason(self, name: str, build_only: bool) -> str | None:
        b = get_backend(name)
        return b.cannot_build() if build_only else b.unavailable()

    def left_out(self) -> list[str]:
        """One line per backend that ``auto`` generated no cases for and per model that cannot run here, with
        the reason: what the run did not cover, said once instead of in a skip per case."""
        lines = []
        if self.auto_backends:
            for name in BACKENDS:
                if name in self.backends(build_only=True) and name not in self.backends():
                    lines.append(f"backend {name}: build cases only (-m build): cannot run here: "
                                 f"{self._backend_reason(name, False)}")
                elif name not in self.backends(build_only=True):
                    lines.append(f"backend {name}: no cases: {self._backend_reason(name, True)}")
        for spec in self.models():
            if spec.unavailable:
                lines.append(f"model {spec.name}: no cases: {spec.unavailable}")
        if self.auto_backends:
            kinds = sorted({self.recipe(r).kind for spec in self.models() if not spec.unavailable
                            for r in self.model_recipes(spec, self.settings.recipes)})
            for backend in self.backends():
                for kind in kinds:
                    reason = get_backend(backend).unsupported_recipe(kind)
                    if reason:
                        lines.append(f"{kind} recipes on {backend}: no cases: {reason}")
        return lines

    def accuracy_cases(self, *, build_only: bool = False) -> Iterator[AccuracyCase]:
        """Every model x backend x recipe x profile, at each selected shape point of the profile (a build case
        builds the profile's engine once, at none)."""
        from .shape_cases import shape_points

        for spec in self.models():
            for backend in self.backends(build_only=build_only):
                for recipe in self.model_recipes(spec, self.settings.recipes):
                    if not build_only and not self.runs_recipe(backend, recipe):
                        continue
                    for profile in self.model_profiles(spec, self.settings.profiles):
                        points = ["opt"] if build_only or spec.unavailable else \
                            shape_points(spec.profiles[profile], self.settings.shapes or spec.shapes)
                        for point in points:
                            yield AccuracyCase(spec.name, backend, recipe, profile, point)

    def build_options(self, backend: Any, *parts: dict[str, Any]) -> dict[str, Any]:
        """Builder options for a backend: the user's (--trt-options for TensorRT, --ort-setup for ONNX Runtime),
        then recipe and mode's."""
        out: dict[str, Any] = dict(self.settings.trt_options) if backend.needs_tensorrt else {}
        if backend.takes_ort_setup and self.settings.ort_setup:
            out["ort_setup"] = dict(self.settings.ort_setup)
        for p in parts:
            out.update(p)
        return out

    def skip_reason(self, model: str, backend: str, recipe: str | None = None, *, build_only: bool = False) -> str | None:
        """Why a case cannot run here (a missing package, backend or device), or None. ``build_only``: only
        the engine is built (TensorRT-RTX builds without a GPU)."""
        spec = self.model(model)
        if spec.unavailable:
            return f"model {model!r} is unavailable: {spec.unavailable}"
        b = get_backend(backend)
        reason = b.cannot_build() if build_only else b.unavailable()
        if reason:
            return f"{backend}: {reason}"
        if recipe is not None:
            reason = b.unsupported_recipe(self.recipe(recipe).kind)
            if reason:
                return f"{backend} cannot run {recipe}: {reason}"
        return None


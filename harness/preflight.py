"""Checks that run when a session starts, before any case: a bad registry or a selection that selects nothing
stops the run with one line instead of failing case after case (or passing green with nothing run).

* the registry loads (every field checked against the ONNX files: :mod:`harness.registry`) and its recipes
  are well formed;
* every recipe it names exists: each model's ``recipes``, ``[defaults] recipes`` and ``perf_recipes``, and
  the keys of ``budgets`` and ``known_failures`` (the model's, the defaults' and each ``[[models.NAME.where]]``
  block's), which may also name a recipe kind (fp32, fp16, bf16, int8);
* every name in ``--models``, ``--recipes``, ``--profiles`` selects something, and, when perf cases can run,
  ``--perf-recipes``, ``--perf-profiles`` and every ``--perf-batches`` size (each must fit a selected profile).
"""

from __future__ import annotations

from collections.abc import Mapping

from .data import batch_size_of
from .errors import HarnessError, RegistryError
from .recipes import KINDS, Recipe
from .session import HarnessSession
from .spec import ModelSpec, Registry


def check_registry(reg: Registry, recipes: Mapping[str, Recipe]) -> None:
    """Raise RegistryError naming the file, model and field of the first recipe name that names nothing
    (``recipes``: :func:`harness.recipes.all_recipes`, which checks the recipe tables as it reads them)."""
    src = str(reg.path)

    def known(name: str, model: str | None, fld: str, *, kinds: bool = False) -> None:
        if name in recipes or (kinds and name in KINDS):
            return
        allowed = ", ".join(recipes) + (f"; or a recipe kind: {', '.join(KINDS)}" if kinds else "")
        raise RegistryError(src, model, fld, f"unknown recipe {name!r}; known recipes: {allowed}")

    for name in reg.default_recipes:
        known(name, None, "defaults.recipes")
    for name in reg.perf_recipes or []:
        known(name, None, "defaults.perf_recipes")
    for key in reg.default_budgets:
        known(key, None, f"defaults.budgets.{key}", kinds=True)
    for spec in reg.models.values():
        for name in spec.recipes or []:
            known(name, spec.name, "recipes")
        for key in spec.budgets:
            if key not in reg.default_budgets:
                known(key, spec.name, f"budgets.{key}", kinds=True)
        for key in spec.known_failures:
            known(key, spec.name, f"known_failures.{key}", kinds=True)
        for check, layers in spec.check_bounds.items():
            for source, table in layers[1:]:  # the registry's own: its defaults, then the model's
                for key in table:
                    known(key, None if source != "model" else spec.name,
                          f"{'defaults.' if source != 'model' else ''}{check}.{key}", kinds=True)
        for i, scope in enumerate(spec.scopes):
            for key in scope.budgets:
                known(key, spec.name, f"where[{i}].budgets.{key}", kinds=True)
            for key in scope.known_failures:
                known(key, spec.name, f"where[{i}].known_failures.{key}", kinds=True)


def check_selection(hs: HarnessSession, *, perf: bool) -> None:
    """Raise HarnessError, naming the option and what it could name, when an option selects nothing."""
    s = hs.settings
    models = hs.models()  # an unknown --models name is a RegistryError naming what the registry has
    usable = [m for m in models if not m.unavailable]
    for dest, names in (("recipes", s.recipes), ("perf_recipes", s.perf.recipes if perf else None)):
        unknown = [n for n in names or [] if n not in hs.recipes]
        if unknown:
            raise HarnessError(f"{s.source(dest)} names unknown recipe(s) {', '.join(unknown)}; known: "
                               f"{', '.join(hs.recipes)}")
    for dest, names in (("profiles", s.profiles), ("perf_profiles", s.perf.profiles if perf else None)):
        _check_profiles(s.source(dest), names, usable)
    if s.shapes and usable:
        from .shape_cases import check_wanted

        check_wanted(s.shapes, [m.profiles[p] for m in usable for p in hs.model_profiles(m, s.profiles)],
                     s.source("shapes"))
    if perf and s.perf.batches and usable:
        _check_batches(hs, s.source("perf_batches"), s.perf.batches, usable)
    if perf:
        from .stations.check import STATION_MODES, selected_stations

        unknown = [m for m in s.perf.station_modes if m not in STATION_MODES]
        if unknown:
            raise HarnessError(f"{s.source('station_modes')} names unknown mode(s) {', '.join(unknown)}; known: "
                               f"{', '.join(STATION_MODES)}")
        selected_stations(hs)  # an unknown --stations name is refused, naming the registry's stations
        from .server_check import check_server_options

        check_server_options(s.perf, s.source)  # a bad --perf-latency-bound or --server-rates, named


def _check_profiles(option: str, names: list[str] | None, models: list[ModelSpec]) -> None:
    if not names or not models:  # models that cannot load here have no profiles to check against
        return
    have = list(dict.fromkeys(p for m in models for p in m.profiles))
    missing = [n for n in names if n not in have]
    if missing:
        raise HarnessError(f"{option} names {', '.join(missing)}, which none of the selected models "
                           f"({', '.join(m.name for m in models)}) has; their profiles: {', '.join(have)}")


def _check_batches(hs: HarnessSession, option: str, batches: list[int], models: list[ModelSpec]) -> None:
    wanted = hs.settings.perf.profiles or hs.settings.profiles
    ranges = []
    for spec in models:
        for name in hs.model_profiles(spec, wanted):
            prof = spec.profiles[name]
            ranges.append((spec.name, name, batch_size_of(spec, prof, "min"), batch_size_of(spec, prof, "max")))
    misfits = [b for b in batches if not any(lo <= b <= hi for _m, _p, lo, hi in ranges)]
    if misfits:
        shown = "; ".join(f"{m} {p} {lo}-{hi}" if lo != hi else f"{m} {p} {lo}" for m, p, lo, hi in ranges)
        raise HarnessError(f"{option} {','.join(map(str, misfits))} fits no selected profile, so it would time "
                           f"nothing; the profiles' batch sizes: {shown}")


def preflight(hs: HarnessSession, *, perf: bool) -> None:
    check_registry(hs.registry, hs.recipes)
    check_selection(hs, perf=perf)

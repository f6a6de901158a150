"""How a pytest run gets the harness's cases, and which of them it runs.

**The registry is a test file.** pytest collects the configured registry TOML (``harness_registry`` in the
ini file, or ``--registry``) like a test module; its items are :mod:`harness.gates`' three tests,
parametrized by the plugin, so a project needs no test file of its own. A plain ``pytest`` (no paths named)
collects it wherever it lies, after ``testpaths`` or the current folder; ``pytest PATH ...`` collects it when
it is one of the paths or lies under one (``pytest models.toml`` runs the gates alone, as does ``pytest
--gates-only``).

**Suites of one's own still work.** A test module whose tests take the ``accuracy_case``, ``perf_case`` or
``build_case`` fixture (this project's ``tests/gates``) gets the same cases generated. A run never generates a
case twice: the registry file, collected after the other paths, leaves out the kinds a suite already
generated; where it is collected first (it lies inside a named folder), its duplicates are deselected.

**perf and build run when asked for.** Perf cases time the machine and must not share it; build cases only
build engines (for a machine without the GPU to run them). Both run when the ``-m`` expression names their
marker (``-m perf``, ``-m build``, ``-m "accuracy or build"``); a plain ``pytest`` runs the accuracy gates.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .gates import GATES

KINDS = {"accuracy_case": "accuracy", "perf_case": "perf", "build_case": "build", "station_case": "station",
         "consistency_case": "consistency", "determinism_case": "determinism", "server_case": "server"}
# each kind's marker
MARKER = {"accuracy": "accuracy", "perf": "perf", "build": "build", "station": "perf", "consistency": "accuracy",
          "determinism": "accuracy", "server": "perf"}
ON_REQUEST = ("perf", "build", "station", "server")  # kinds that run only when -m names their marker


class RegistryFile(pytest.Module):
    """The registry TOML as a test module whose tests are :mod:`harness.gates`'."""

    def _getobj(self) -> Any:
        from . import gates

        return gates

    def istestfunction(self, obj: object, name: str) -> bool:
        # the gate functions by name, whatever python_functions says; perf and build only when -m asks for
        # them (so that a plain run does not list them as deselected)
        kind = GATES.get(name)
        if kind is None or (kind in ON_REQUEST and not selects(self.config, MARKER[kind])):
            return False
        # the items collected before this file: a suite that generated this kind of case already
        return kind not in {case_kind(i) for i in self.session.items}

    def istestclass(self, obj: object, name: str) -> bool:
        return False


def case_kind(item: pytest.Item) -> str | None:
    """accuracy, perf, build or station for a harness case; None for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for fixture, kind in KINDS.items():
        if fixture in params:
            return kind
    return None


def names_marker(expr: str, marker: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(marker)}(?![\w.])", expr or "") is not None


def selects(config: pytest.Config, marker: str) -> bool:
    """Whether the -m expression names ``marker`` and selects a test that carries it (with any of the harness's
    other marks): perf and build cases run only then."""
    expr = config.getoption("markexpr", "") or ""
    if not names_marker(expr, marker):
        return False
    from _pytest.mark.expression import Expression

    compiled = Expression.compile(expr)
    for extra in ((), ("gpu",), ("tensorrt",), ("gpu", "tensorrt")):
        marks = {marker, *extra}
        if compiled.evaluate(lambda name, /, marks=marks, **kw: name in marks and not kw):
            return True
    return False


def split(items: list[pytest.Item], config: pytest.Config) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected): a registry file's cases of a kind that a suite also generates, and perf and build
    cases the -m expression does not ask for, are deselected."""
    from_suites = {case_kind(i) for i in items if not isinstance(i.parent, RegistryFile)}
    asked = {kind for kind in ON_REQUEST if selects(config, MARKER[kind])}
    keep, drop = [], []
    for item in items:
        kind = case_kind(item)
        if kind is None:
            keep.append(item)
        elif (kind in ON_REQUEST and kind not in asked) or (isinstance(item.parent, RegistryFile)
                                                             and kind in from_suites):
            drop.append(item)
        else:
            keep.append(item)
    return keep, drop


def collection_args(config: pytest.Config, registry: Path, *, gates_only: bool) -> list[str] | None:
    """The paths to collect, where the registry changes them: the registry alone with --gates-only; the
    default paths (testpaths, or the current folder) and then the registry, when no path was named and it
    lies outside them. None: pytest's own."""
    if gates_only:
        return [str(registry)]
    if config.args_source == pytest.Config.ArgsSource.ARGS or is_under(registry.resolve(), collection_paths(config)):
        return None
    return [*config.args, str(registry)]


def is_under(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def collection_paths(config: pytest.Config) -> list[Path]:
    """The files and folders pytest collects from (node ids reduced to their file)."""
    base = config.invocation_params.dir
    return [(base / a.split("::", 1)[0]).resolve() for a in config.args]


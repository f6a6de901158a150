"""The fix as a recipe a registry takes, and its price.

The recipe is a ``[recipes.NAME]`` TOML entry: the failing recipe's own parameters (those that differ from
the defaults) plus ``keep_fp32``, with comments saying what it fixes and what it costs. Before it is offered
it is read back with the registry's own reader and re-gated (:func:`recipe_from_toml`), so what is printed is
what passed.

The price is serial throughput on the case's backend, through the perf code path
(:func:`harness.perf.measure_mode`, one runner, back to back, at the profile's opt batch): the fixed recipe
against the failing one and against FP32. The three are timed in alternation, twice each, and each keeps its
better run, so that a burst of load on a shared machine moves no one recipe alone.
"""

from __future__ import annotations

import json
from typing import Any

from ..data import SampleSet, batch_size_of
from ..recipes import Recipe, recipe_from_table
from ..recipes.options import OPTIONS

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def with_keep(recipe: Recipe, keep: list[str], name: str) -> Recipe:
    """``recipe`` with ``keep`` added to its ``keep_fp32`` (in a fixed order: the list is part of the artifact's
    cache key)."""
    params = recipe.options
    params["keep_fp32"] = list(dict.fromkeys([*params.get("keep_fp32", []), *sorted(keep)]))
    return Recipe(name, recipe.kind, tuple(sorted(params.items())))


def recipe_toml(recipe: Recipe, comments: list[str]) -> str:
    """A ``[recipes.NAME]`` entry for ``recipe``: its parameters that differ from its kind's defaults, and its
    ``keep_fp32`` one node a line."""
    defaults = OPTIONS[recipe.kind]
    params = {k: v for k, v in recipe.options.items() if k != "keep_fp32" and defaults.get(k, object()) != v}
    lines = [f"# {c}" for c in comments]
    lines += [f"[recipes.{_key(recipe.name)}]", f"kind = {_value(recipe.kind)}"]
    lines += [f"{k} = {_value(v)}" for k, v in sorted(params.items())]
    lines.append("keep_fp32 = [")
    lines += [f"  {_value(n)}," for n in recipe.options.get("keep_fp32", [])]
    lines.append("]")
    return "\n".join(lines) + "\n"


def recipe_from_toml(text: str, source: str) -> Recipe:
    """The recipe a ``[recipes.NAME]`` entry defines, read as the registry reads it."""
    data = tomllib.loads(text)
    ((name, table),) = data["recipes"].items()
    return recipe_from_table(name, table, source)


def _key(name: str) -> str:
    return name if all(c.isalnum() or c in "-_" for c in name) else json.dumps(name)


def _value(v: Any) -> str:
    """A TOML value: JSON's strings, numbers and lists are TOML's (booleans are spelled alike)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(v)


def serial_price(gate: Any, recipes: dict[str, Recipe], *, seconds: float, rounds: int = 2) -> dict[str, Any]:
    """Serial throughput (samples / s) of each recipe's engine on the gate's backend at the profile's opt batch:
    ``{"batch": 8, "mode": "serial", "throughput": {role: x}, "stable": {role: bool}, "recipes": {role: name}}``."""
    from ..perf import PerfCase, measure_mode
    from ..resources import ResourceMonitor
    from ..timing import TimingPolicy

    spec, profile, backend = gate.spec, gate.profile, gate.backend
    batch = batch_size_of(spec, profile)
    feeds = next(SampleSet(spec, profile, size=batch).batches(batch)).feeds
    policy = TimingPolicy(warmup=min(0.3, seconds), min_duration=seconds, min_iters=10, max_duration=10 * seconds)
    threads = backend.runner_threads("serial", 1)
    engines = {role: gate.engine(r)[1] for role, r in recipes.items()}
    best: dict[str, float] = {}
    stable: dict[str, bool] = {}
    for _ in range(rounds):
        for role, engine in engines.items():
            case = PerfCase(spec.name, backend.name, recipes[role].name, profile.name, "serial", batch)
            m, _ = measure_mode(engine, case, feeds, policy, threads, ResourceMonitor(gpu_index=0 if backend.on_gpu
                                                                                      else None))
            if m.throughput > best.get(role, 0.0):
                best[role], stable[role] = float(m.throughput), bool(m.stable)
    return {"batch": batch, "mode": "serial", "seconds": seconds, "rounds": rounds, "threads": threads,
            "throughput": best, "stable": stable, "recipes": {role: r.name for role, r in recipes.items()}}

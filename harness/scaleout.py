"""The plugin's side of running past one process and one host: ``--gpus``, ``--gpu-cpus``, ``--shard``,
``--shard-durations``, and what the session header says about them and about the engine cache's storage.

These options act whether or not a registry is configured (they are asked for by name): ``--gpus`` pins
pytest-xdist workers for any GPU test suite, ``--shard`` splits any collection. The logic lives in
:mod:`harness.devices`, :mod:`harness.xdist_support`, :mod:`harness.shard` and :mod:`harness.sharedfs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

from .errors import HarnessError
from .options import BY_DEST, Option, Raw, parse_value

Lookup = Callable[[Option], "Raw | None"]
WORKERS_KEY = pytest.StashKey[Any]()  # the controller's xdist_support.GpuWorkers
SHARD_KEY = pytest.StashKey[str]()  # what --shard kept, for the terminal summary
PLAN_KEY = pytest.StashKey[Any]()  # (Shard, durations or None, their file or None), read at configure


class DevicePinWarning(UserWarning):
    """A worker could not be pinned to the CPUs chosen for it; it runs on the CPUs it had."""


def option(lookup: Lookup, dest: str, config: pytest.Config) -> Any:
    """One option's checked value from the command line or the ini file, else its default (None if none)."""
    opt = BY_DEST[dest]
    raw = lookup(opt)
    if raw is None:
        if opt.default is None:
            return None
        raw = Raw(opt.default, "default", config.rootpath)
    try:
        return parse_value(opt, raw)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def auto_workers(config: pytest.Config, lookup: Lookup) -> int | None:
    """``-n auto`` with ``--gpus``: the number of GPUs; None lets pytest-xdist count the cores."""
    wanted = option(lookup, "gpus", config)
    if wanted is None:
        return None
    from .xdist_support import auto_workers as count

    try:
        return count(wanted)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def configure(config: pytest.Config, lookup: Lookup, *, registry: bool) -> None:
    """On the controller (or a run without workers): pin GPUs and CPUs, refuse perf where it would share. In every
    process: read --shard and its durations (a bad value stops the run before anything is collected)."""
    _read_shard(config, lookup)
    if hasattr(config, "workerinput"):
        from .devices import apply_cpus

        problem = apply_cpus()  # CUDA_VISIBLE_DEVICES came with the process; its CPUs are set here
        if problem:
            warnings.warn(DevicePinWarning(problem), stacklevel=1)
        return
    wanted = option(lookup, "gpus", config)
    from .collect import selects

    perf = registry and selects(config, "perf")
    if wanted is None and not perf:
        return
    from .xdist_support import setup_controller

    try:
        config.stash[WORKERS_KEY] = setup_controller(config, wanted, option(lookup, "gpu_cpus", config), perf=perf)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def unconfigure(config: pytest.Config) -> None:
    workers = config.stash.get(WORKERS_KEY, None)
    if workers is not None:
        workers.close()


def header(config: pytest.Config, cache_dir: Any | None) -> list[str]:
    lines = []
    workers = config.stash.get(WORKERS_KEY, None)
    if workers is not None:
        lines += [f"harness: {line}" for line in workers.lines]
    if cache_dir is not None:
        from .sharedfs import cache_lock_note

        note = cache_lock_note(cache_dir)
        if note is not None:
            text, warn = note
            lines.append(f"harness: {'WARNING: ' if warn else ''}{text}")
    return lines


def case_id(item: pytest.Item) -> str:
    """A test's id for sharding: ``kind:case id`` for a harness case (whichever file generated it), else its
    node id."""
    from .collect import KINDS

    params = getattr(getattr(item, "callspec", None), "params", {})
    for fixture, kind in KINDS.items():
        if fixture in params:
            return f"{kind}:{params[fixture].id}"
    return item.nodeid


def _read_shard(config: pytest.Config, lookup: Lookup) -> None:
    shard = option(lookup, "shard", config)
    if shard is None:
        return
    from .shard import durations_from

    path = option(lookup, "shard_durations", config)
    try:
        durations = durations_from(path) if path is not None else None
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PLAN_KEY] = (shard, durations, path)


def shard_items(config: pytest.Config, items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected) by ``--shard``; every process computes the same split (xdist workers must)."""
    plan = config.stash.get(PLAN_KEY, None)
    if plan is None:
        return items, []
    from .shard import describe, select

    shard, durations, path = plan
    mine = select([case_id(i) for i in items], shard, durations)
    keep = [i for i, m in zip(items, mine) if m]
    drop = [i for i, m in zip(items, mine) if not m]
    config.stash[SHARD_KEY] = describe(shard, len(keep), len(items), durations, path)
    return keep, drop

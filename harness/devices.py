"""Which GPU each process computes on, and which CPUs its threads run on: ``--gpus`` and ``--gpu-cpus``.

``pytest -n auto --gpus all`` starts one pytest-xdist worker per GPU (``-n auto`` counts the GPUs instead of
the cores) and pins worker ``gwK`` to the K-th GPU of the list (round robin when ``-n`` gives more workers
than GPUs). The pin is ``CUDA_VISIBLE_DEVICES`` set in the worker's environment by execnet as the worker
process starts (``popen//env:CUDA_VISIBLE_DEVICES=1``), before pytest, ONNX Runtime or CUDA is imported
there: CUDA reads the variable once, when it initializes, so a pin set later would be ignored.

The GPUs are numbered as this process sees them. Without ``CUDA_VISIBLE_DEVICES``, ``--gpus 0,1`` are
``nvidia-smi``'s indices (NVML's, in PCI bus order), ``all`` every GPU NVML lists, and the workers get
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA counts in the same order. Under a caller's
``CUDA_VISIBLE_DEVICES=3,5`` (a scheduler's allocation), ``all`` is those two and ``--gpus 1`` is ``5``: the
harness indexes into the caller's list and passes its entries on unchanged (indices, UUIDs or MIG
instances), under the caller's own ``CUDA_DEVICE_ORDER``. Without ``-n`` (one process) ``--gpus`` must name
one GPU, and pins this process.

CPUs (``--gpu-cpus near``, the default): each pinned process's threads run on the CPUs NVML reports near its
GPU (``nvmlDeviceGetCpuAffinity``: the GPU's NUMA node), within the CPUs this process may use; workers whose
GPUs share those CPUs get disjoint, equal shares of them, whole cores together (hyperthread siblings are never
split), so that one worker's host threads do not compete with another's. Where NVML gives no topology the
host's CPUs are split the same way. The CPUs and the reason are in every row (``env.cpu_affinity``,
``env.cpu_affinity_from``). ``--gpu-cpus all`` pins nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .environment import cpu_ranges, find_gpu, gpus, parse_cpu_ranges, visible_entries
from .errors import HarnessError

ENV_PINNED = "HARNESS_GPU"  # the CUDA_VISIBLE_DEVICES entry the harness pinned this process to
ENV_CPUS = "HARNESS_CPUS"  # the CPUs it pins this process's threads to ("0-15")
ENV_CPUS_FROM = "HARNESS_CPUS_FROM"  # why those, for the rows (harness.environment reads it)
ALL = "all"
CPU_POLICIES = ("near", "all")


class GpuError(HarnessError):
    """``--gpus`` cannot be honoured here; the message names the option, what it asked and what there is."""


def parse_gpus(text: str, source: str = "--gpus") -> str | list[int]:
    """``all`` or a comma-separated list of distinct GPU numbers."""
    s = str(text).strip()
    if s == ALL:
        return ALL
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items or not all(x.isdigit() for x in items):
        raise GpuError(f"{source}: cannot use {text!r}: give all, or GPU numbers separated by commas, e.g. 0,1")
    numbers = [int(x) for x in items]
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise GpuError(f"{source}: cannot use {text!r}: GPU {', '.join(map(str, twice))} named twice (one worker per "
                       "GPU: -n gives more workers than GPUs if that is what you want)")
    return numbers


def nvml_count() -> int | None:
    """GPUs NVML lists on this host (None without NVML or a driver)."""
    found = gpus()
    if found:
        return len(found)
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:  # no NVML, no driver: nothing to count
        return None


@dataclass(frozen=True)
class GpuPlan:
    """The GPUs a run uses: the ``CUDA_VISIBLE_DEVICES`` entry of each, in ``--gpus`` order."""

    entries: list[str]
    seen: str  # what was visible, for messages: "CUDA_VISIBLE_DEVICES=3,5", "2 GPUs (NVML)"
    caller_list: bool  # the entries come from the caller's CUDA_VISIBLE_DEVICES
    environ: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def pin_env(self, entry: str) -> dict[str, str]:
        """The environment that pins a process to ``entry`` before CUDA starts in it."""
        env = {"CUDA_VISIBLE_DEVICES": entry, ENV_PINNED: entry}
        if not self.caller_list and "CUDA_DEVICE_ORDER" not in self.environ:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering = NVML's = nvidia-smi's
        return env


def plan_gpus(wanted: str | list[int], *, environ: Mapping[str, str] | None = None,
              count: Callable[[], int | None] = nvml_count, source: str = "--gpus") -> GpuPlan:
    """The GPUs ``--gpus`` names, as entries for the workers' ``CUDA_VISIBLE_DEVICES``."""
    env = dict(os.environ if environ is None else environ)
    numbers = wanted if isinstance(wanted, list) else None  # None: all
    asked = ALL if numbers is None else ",".join(map(str, numbers))
    caller = visible_entries(env)
    if caller is not None:
        visible, seen = caller, f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')!r}"
        if not visible:
            raise GpuError(f"{source} {asked}: {seen} hides every GPU from this process")
    else:
        n = count()
        if n is None and numbers is None:
            raise GpuError(f"{source} all: cannot count this host's GPUs (no NVML: install nvidia-ml-py, or no driver); "
                           "name them (--gpus 0,1) or set CUDA_VISIBLE_DEVICES")
        if n == 0:
            raise GpuError(f"{source} {asked}: NVML finds no GPU on this host")
        visible = [str(i) for i in range(n if n is not None else max(numbers or [0]) + 1)]
        seen = f"{n} GPU(s) found by NVML" if n is not None else "GPUs not counted (no NVML)"
    if numbers is None:
        entries = list(visible)
    else:
        beyond = [i for i in numbers if i >= len(visible)]
        if beyond:
            raise GpuError(f"{source} {asked}: no GPU {', '.join(map(str, beyond))} here: this process sees "
                           f"{len(visible)} ({seen}), numbered 0 to {len(visible) - 1}")
        entries = [visible[i] for i in numbers]
    return GpuPlan(entries, seen, caller is not None, env)


def worker_number(workerid: str) -> int:
    """``gw3`` -> 3."""
    digits = workerid[2:] if workerid.startswith("gw") else ""
    if not digits.isdigit():
        raise GpuError(f"unexpected pytest-xdist worker id {workerid!r} (gw0, gw1, ...)")
    return int(digits)


def worker_entries(plan: GpuPlan, workers: int) -> list[str]:
    """The GPU of each worker gw0, gw1, ...: the plan's GPUs in order, round robin."""
    return [plan.entries[k % len(plan.entries)] for k in range(workers)]


def exclusive(entries: list[str]) -> bool:
    """Whether every worker has a GPU of its own."""
    return len(set(entries)) == len(entries)


# ---------------------------------------------------------------------------------------------- CPUs


def near_cpus(entry: str) -> set[int] | None:
    """The CPUs NVML reports near the GPU an entry names (its NUMA node), or None where it cannot tell."""
    gpu = find_gpu(entry, gpus())
    if gpu is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu["index"])
        words = max(1, ((os.cpu_count() or 1) + 63) // 64)
        masks = pynvml.nvmlDeviceGetCpuAffinity(handle, words)
    except Exception:  # an NVML without the call, or a container that hides the topology
        return None
    cpus = {w * 64 + b for w, mask in enumerate(masks) for b in range(64) if int(mask) >> b & 1}
    return cpus or None


def core_of(cpu: int) -> int:
    """The lowest CPU number of ``cpu``'s physical core (its hyperthread siblings share it)."""
    path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
    try:
        return min(parse_cpu_ranges(path.read_text().strip()))
    except (OSError, ValueError):
        return cpu


def split_cpus(near: list[set[int] | None], allowed: set[int], *, names: list[str],
               core: Callable[[int], int] = core_of) -> list[tuple[set[int], str]]:
    """Each worker's CPUs and why: the CPUs near its GPU (``near``; None: unknown) within ``allowed``, split into
    disjoint, equal shares of whole cores between the workers that share them; ``names`` ("GPU 1") per worker."""
    groups: dict[frozenset[int], list[int]] = {}
    for k, cpus in enumerate(near):
        own = (cpus or set()) & allowed
        groups.setdefault(frozenset(own or allowed), []).append(k)
    out: list[tuple[set[int], str]] = [(set(), "")] * len(near)
    taken: set[int] = set()
    for group, workers in groups.items():
        first = workers[0]
        where = (f"near {names[first]} (NVML)" if near[first] and near[first] & allowed  # type: ignore[operator]
                 else "no GPU topology from NVML: this process's CPUs")
        free = sorted(group - taken)
        cores: dict[int, list[int]] = {}
        for c in free:
            cores.setdefault(core(c), []).append(c)
        units = list(cores.values())
        if len(units) < len(workers):  # fewer free cores than workers: they share, and say so
            for k in workers:
                out[k] = (set(group), f"{where}, shared by {len(workers)} workers (too few cores to split)")
            continue
        size, extra = divmod(len(units), len(workers))
        start = 0
        for j, k in enumerate(workers):
            n = size + (1 if j < extra else 0)
            mine = {c for unit in units[start:start + n] for c in unit}
            start += n
            share = f", 1 of {len(workers)} equal shares" if len(workers) > 1 else ""
            out[k] = (mine, f"{where}{share}")
            taken |= mine
    return out


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return set(range(os.cpu_count() or 1))


def cpu_env(entries: list[str], policy: str, *, near: Callable[[str], set[int] | None] = near_cpus,
            allowed: set[int] | None = None) -> list[dict[str, str]]:
    """The CPU part of each worker's environment (empty with ``--gpu-cpus all`` or off Linux)."""
    if policy == "all" or not hasattr(os, "sched_setaffinity"):
        return [{} for _ in entries]
    have = allowed if allowed is not None else allowed_cpus()
    shares = split_cpus([near(e) for e in entries], have, names=[f"GPU {e}" for e in entries])
    return [{ENV_CPUS: cpu_ranges(cpus), ENV_CPUS_FROM: why} for cpus, why in shares]


def apply_cpus(environ: Mapping[str, str] | None = None) -> str | None:
    """Pin this process's threads (and those it starts later) to ``HARNESS_CPUS``; returns a problem, or None."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_CPUS)
    if not text or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        os.sched_setaffinity(0, parse_cpu_ranges(text))
    except (OSError, ValueError) as exc:
        return f"could not pin this process to CPUs {text}: {exc}"
    return None


def tx_spec(env: Mapping[str, str]) -> str:
    """An execnet spec that starts a local worker with ``env`` set before it imports anything."""
    bad = [k for k, v in env.items() if "//" in v or "=" in k]
    if bad:
        raise GpuError(f"cannot pass {', '.join(bad)} to a pytest-xdist worker: execnet specs cannot hold '//'")
    return "//".join(["popen", *(f"env:{k}={v}" for k, v in env.items())])


def describe(entries: list[str], cpus: list[dict[str, str]]) -> str:
    """"gw0 GPU 0 (CPUs 0-15), gw1 GPU 1 (CPUs 16-31)"."""
    parts = []
    for k, (e, c) in enumerate(zip(entries, cpus)):
        parts.append(f"gw{k} GPU {e}" + (f" (CPUs {c[ENV_CPUS]})" if c.get(ENV_CPUS) else ""))
    return ", ".join(parts)


def pinned_here(environ: Mapping[str, Any] | None = None) -> str | None:
    """The GPU the harness pinned this process to (its CUDA_VISIBLE_DEVICES entry), or None."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_PINNED)
    return str(value) if value else None

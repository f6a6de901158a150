"""pytest-xdist-only code, kept apart so that the plugin works without xdist installed.

**Workers and GPUs.** With ``--gpus`` (:mod:`harness.devices`) the controller starts one worker per GPU:
``-n auto`` counts the GPUs (:func:`auto_workers`), and each worker's execnet spec sets its
``CUDA_VISIBLE_DEVICES`` (and its CPUs) as the process starts, before anything is imported in it
(:func:`setup_controller`). Workers write their rows under the controller's run id.

**Perf under xdist.** Perf tests time the CPU or GPU and must not share it with other tests, nor with each
other. Without ``--gpus`` they are refused under ``-n`` (the controller refuses at start, before any worker
exists, when the ``-m`` expression selects perf tests: :func:`harness.collect.selects`). With ``--gpus`` they
run when every worker has a GPU of its own, and then:

* two timed cases never share a GPU: each worker runs its cases one after another on its own GPU;
* no build overlaps a timed measurement anywhere on the host: builds (recipes, engines, references) hold a
  host-wide lock exclusively, measurements hold it shared (:mod:`harness.hostlock`), so the GPUs are timed
  side by side but never beside a build;
* each worker's host threads run on CPUs of their own near its GPU (``--gpu-cpus near``);
* perf cases of CPU backends (``ort_cpu``) are skipped on such workers, with the reason: they would time
  CPUs that the other workers' threads and memory traffic share. Run them without ``-n``.

What is still shared: the memory bandwidth and caches of a socket, the PCIe root complex, and accuracy
cases (which are not builds) of other workers when ``-m "perf or accuracy"`` mixes them; ``-m perf`` alone
gives the cleanest numbers. (xdist's own ``xdist_group`` / ``--dist loadgroup`` cannot pin tests to one
worker with pytest >= 9.2, whose node ids no longer come from the ``_nodeid`` attribute xdist 3.8 rewrites.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest

from . import devices, hostlock
from .session import HarnessSession

REFUSAL = ("perf tests time the CPU or GPU and must not share it with other tests or with each other: run "
           "`pytest -m perf` without -n, or give every worker a GPU of its own (pytest -n auto --gpus all); "
           "accuracy tests parallelize either way")
CPU_PERF_SKIP = ("perf cases of CPU backends do not run on GPU workers (-n with --gpus): the workers share this "
                 "host's memory bandwidth and caches, which the timing would measure; run them without -n")


def distributing(config: pytest.Config) -> bool:
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


class XdistHooks:
    def __init__(self, hs: HarnessSession, config: pytest.Config, generated_key: pytest.StashKey[bool]):
        self.hs = hs
        self.config = config
        self.generated_key = generated_key

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        # every worker writes its rows under the controller's run id, so the controller can merge them
        node.workerinput["harness_run_id"] = self.hs.run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # a worker says whether it generated harness cases: the controller's summary of what was left out
        # concerns only runs that did
        output = getattr(node, "workeroutput", {})
        if output.get("harness_generated"):
            self.config.stash[self.generated_key] = True
        if output.get("harness_shard"):
            from .scaleout import SHARD_KEY

            self.config.stash[SHARD_KEY] = output["harness_shard"]  # every worker kept the same tests


def auto_workers(wanted: str | list[int]) -> int:
    """``-n auto`` with ``--gpus``: one worker per GPU."""
    return len(devices.plan_gpus(wanted).entries)


class GpuWorkers:
    """The controller's side of ``--gpus``: the workers' specs, and the host lock's folder while the session
    lasts (removed at its end)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock_dir: str | None = None

    def close(self) -> None:
        if self.lock_dir is not None:
            shutil.rmtree(self.lock_dir, ignore_errors=True)
            self.lock_dir = None


def setup_controller(config: pytest.Config, wanted: str | list[int] | None, cpu_policy: str, *,
                     perf: bool) -> GpuWorkers:
    """Pin the workers (or, without -n, this process) to their GPUs, or refuse what cannot be honoured."""
    out = GpuWorkers()
    if wanted is None:
        if perf and distributing(config):
            raise pytest.UsageError(REFUSAL + f" (-m {config.getoption('markexpr')!r} selects perf tests)")
        return out
    plan = devices.plan_gpus(wanted)
    asked = "all" if wanted == devices.ALL else ",".join(map(str, wanted))
    if not distributing(config):
        if len(plan.entries) != 1:
            raise pytest.UsageError(
                f"--gpus {asked} gives {len(plan.entries)} GPUs ({', '.join(plan.entries)}; {plan.seen}), but this "
                "run has no workers: add -n auto (one worker per GPU), or name one GPU (--gpus 0)")
        (entry,) = plan.entries
        os.environ.update(plan.pin_env(entry))  # before anything in this process starts CUDA
        mine = devices.cpu_env([entry], cpu_policy)[0]
        os.environ.update(mine)
        problem = devices.apply_cpus()
        out.lines.append(f"this process pinned to GPU {entry}" + (f", CPUs {mine[devices.ENV_CPUS]}" if mine else "")
                         + (f" ({problem})" if problem else ""))
        return out
    specs = [str(t) for t in config.getoption("tx")]
    if any(t != "popen" for t in specs):
        raise pytest.UsageError(f"--gpus pins the local workers -n starts; it cannot pin --tx {', '.join(specs)}: "
                                "use -n N (or -n auto) with --gpus")
    entries = devices.worker_entries(plan, len(specs))
    extra: dict[str, str] = {}
    if perf:
        if not devices.exclusive(entries):
            raise pytest.UsageError(
                f"perf tests need a GPU of their own per worker: -n {len(entries)} with --gpus {asked} puts "
                f"{len(entries)} workers on {len(plan.entries)} GPU(s) ({', '.join(plan.entries)}); use -n auto")
        if not hostlock.available():
            raise pytest.UsageError(REFUSAL + " (this platform has no fcntl for the host lock that keeps builds "
                                              "from running beside a timed case)")
        out.lock_dir = tempfile.mkdtemp(prefix="harness-host-")
        extra[hostlock.ENV] = os.path.join(out.lock_dir, "host.lock")
    cpus = devices.cpu_env(entries, cpu_policy)
    config.option.tx = [devices.tx_spec({**plan.pin_env(e), **c, **extra}) for e, c in zip(entries, cpus)]
    out.lines.append(f"{len(entries)} workers, one per GPU ({plan.seen}): {devices.describe(entries, cpus)}"
                     + ("; builds never beside a timed case (host lock)" if perf else ""))
    return out


def cpu_perf_skip(config: pytest.Config) -> str | None:
    """The reason perf cases of CPU backends skip here: on a worker pinned to a GPU (with -n and --gpus)."""
    return CPU_PERF_SKIP if hasattr(config, "workerinput") and devices.pinned_here() else None

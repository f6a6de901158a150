"""pytest-xdist-only code, kept apart so that the plugin works without xdist installed.

Perf tests time the CPU or GPU and must not share it with other tests, nor with each other: under xdist
they are refused. (xdist's own ``xdist_group`` / ``--dist loadgroup`` cannot pin them to one worker with
pytest >= 9.2, whose node ids no longer come from the ``_nodeid`` attribute xdist 3.8 rewrites.) The
controller refuses at start, before any worker exists, when the ``-m`` expression selects perf tests (perf
cases run only when it names them: :func:`harness.collect.selects`).
"""

from __future__ import annotations

from typing import Any

import pytest

from .session import HarnessSession

REFUSAL = ("perf tests time the CPU or GPU and must not share it with other tests or with each other: run "
           "`pytest -m perf` without -n (accuracy tests parallelize, perf tests do not)")


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
        if getattr(node, "workeroutput", {}).get("harness_generated"):
            self.config.stash[self.generated_key] = True


def refuse_perf_under_xdist(config: pytest.Config) -> None:
    """On the controller, before any worker starts."""
    from .collect import selects

    if not hasattr(config, "workerinput") and distributing(config) and selects(config, "perf"):
        raise pytest.UsageError(REFUSAL + f" (-m {config.getoption('markexpr')!r} selects perf tests)")

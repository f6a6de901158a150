"""pytest-xdist-only hooks, kept apart so that the plugin works without xdist installed."""

from __future__ import annotations

from typing import Any

import pytest

from .session import HarnessSession


class XdistHooks:
    def __init__(self, hs: HarnessSession):
        self.hs = hs

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        # every worker writes its rows under the controller's run id, so the controller can merge them
        node.workerinput["harness_run_id"] = self.hs.run_id


def pin_perf_to_groups(config: pytest.Config) -> None:
    """Let `xdist_group` marks take effect: perf tests of one device then run on one worker, one at a time."""
    if config.getoption("dist", "no") == "load":
        config.option.dist = "loadgroup"

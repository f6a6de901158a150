"""Hooks for the harness's own test suite (loaded by pytest-xdist's controller too, unlike deeper conftests)."""

from __future__ import annotations

from tests.contract.summary import per_version_summary


def pytest_terminal_summary(terminalreporter) -> None:
    line = per_version_summary(terminalreporter.stats)
    if line:
        terminalreporter.write_line(line)

"""The gates of deployment conditions, as the plugin generates them: batch consistency and determinism
(:mod:`harness.consistency`, :mod:`harness.determinism`; accuracy gates, run by default) and open-loop serving
(:mod:`harness.server_check`; perf, run with ``-m perf``). One entry per fixture a gate takes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .session import HarnessSession


def cases_for(hs: HarnessSession, fixture: str) -> Iterator[Any]:
    if fixture == "server_case":
        from .server_check import server_cases

        return server_cases(hs)
    from .selfcheck import selfcheck_cases

    return selfcheck_cases(hs, fixture.removesuffix("_case"))

"""Which parameters each recipe kind accepts, with their defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPTIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
}


def check_options(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    allowed = OPTIONS[kind]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for a {kind} recipe; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    params = dict(allowed)
    params.update(given)
    return params

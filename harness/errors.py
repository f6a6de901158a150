"""Errors the harness raises on bad input.

Every error names what is at fault (the file, model, input, option or field) so that a user can fix it
without reading a traceback. They all derive from ``HarnessError`` so that the plugin and the command line
can tell "your input is wrong" apart from a bug.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class RegistryError(HarnessError):
    """A model registry entry is wrong. The message names the registry file, the model (or, with
    ``kind="station"``, the station) and the field."""

    def __init__(self, source: str, model: str | None, field: str | None, problem: str, *, kind: str = "model"):
        where = source
        if model:
            where += f": {kind} {model!r}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")
        self.source, self.model, self.field, self.problem = source, model, field, problem


class ProfileError(HarnessError):
    """A shape profile is malformed, or an input shape falls outside it."""


class RecipeError(HarnessError):
    """A precision recipe cannot be applied to a model (the message says why and what to change)."""


class BackendUnavailable(HarnessError):
    """A backend or the device it needs is missing. Tests that need it are skipped with this reason."""


class ModeUnsupported(HarnessError):
    """A backend cannot run a perf mode or option; the test is skipped with this reason."""


class BuildError(HarnessError):
    """An engine build failed (parse errors name the ONNX nodes at fault)."""


class CacheError(HarnessError):
    """The engine cache cannot be used (unwritable folder, a lock that cannot be taken)."""

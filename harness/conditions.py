"""Where an expectation holds: a backend list and a device condition, e.g. ``device = "x86 and not vnni"``.

The registry scopes budgets and known failures with these (``[[models.NAME.where]]``): ONNX Runtime's int8
kernels give different numbers on x86 CPUs with and without VNNI, so a lesson measured on one CPU holds on the
other only when it says where it holds.

A device condition is a boolean expression over *device words* (``and``, ``or``, ``not``, parentheses):

* on the CPU (``ort_cpu``): ``cpu``, the architecture family (``x86``, ``arm``), every instruction-set extension
  of :mod:`harness.cpu_features` (``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``, ``amx_int8``,
  ``asimddp``, ``i8mm`` ...) and the groups ``vnni`` (AVX512-VNNI or AVX-VNNI), ``amx``, ``avx512``;
* on a GPU: ``gpu`` and the compute capability as ``smXY`` (``sm90`` for an H100 or H200, ``sm89``...).

A word that is none of these is refused when the registry loads, so that a typo never makes a condition
silently false.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .cpu_features import ARM_FEATURES, X86_FEATURES, feature_words

GROUPS = ("cpu", "gpu", "x86", "arm", "vnni", "amx", "avx512")
_SM = re.compile(r"^sm\d{2,3}$")
_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9_.]+)")


def known_word(word: str) -> bool:
    return word in GROUPS or word in X86_FEATURES or word in ARM_FEATURES or bool(_SM.match(word))


def device_words(device: Mapping[str, Any]) -> set[str]:
    """The words a condition can test for a backend's device (its cache-key identity)."""
    if device.get("type") == "cpu":
        return feature_words(device.get("features", ()), device.get("family")) | {"cpu"}
    words = {"gpu"}
    cc = str(device.get("compute_capability", ""))
    if cc:
        words.add("sm" + cc.replace(".", ""))
    return words


class ConditionError(ValueError):
    """A device condition that cannot be read; the message says where and why."""


@dataclass(frozen=True)
class DeviceExpr:
    """A parsed device condition; ``text`` is what the registry wrote."""

    text: str
    tree: Any

    @classmethod
    def parse(cls, text: str) -> DeviceExpr:
        if not isinstance(text, str) or not text.strip():
            raise ConditionError(f"a device condition must be a non-empty string, got {text!r}")
        tokens = _tokenize(text)
        tree, rest = _parse_or(tokens, text)
        if rest:
            raise ConditionError(f"device condition {text!r}: unexpected {' '.join(rest)!r}")
        return cls(text.strip(), tree)

    def holds(self, words: Iterable[str]) -> bool:
        return _eval(self.tree, set(words))


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConditionError(f"device condition {text!r}: cannot read {text[pos:].strip()!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _parse_or(tokens: list[str], text: str) -> tuple[Any, list[str]]:
    left, tokens = _parse_and(tokens, text)
    while tokens and tokens[0] == "or":
        right, tokens = _parse_and(tokens[1:], text)
        left = ("or", left, right)
    return left, tokens


def _parse_and(tokens: list[str], text: str) -> tuple[Any, list[str]]:
    left, tokens = _parse_not(tokens, text)
    while tokens and tokens[0] == "and":
        right, tokens = _parse_not(tokens[1:], text)
        left = ("and", left, right)
    return left, tokens


def _parse_not(tokens: list[str], text: str) -> tuple[Any, list[str]]:
    if not tokens:
        raise ConditionError(f"device condition {text!r} ends too early")
    head, rest = tokens[0], tokens[1:]
    if head == "not":
        inner, rest = _parse_not(rest, text)
        return ("not", inner), rest
    if head == "(":
        inner, rest = _parse_or(rest, text)
        if not rest or rest[0] != ")":
            raise ConditionError(f"device condition {text!r}: a '(' is not closed")
        return inner, rest[1:]
    if head in ("and", "or", ")"):
        raise ConditionError(f"device condition {text!r}: unexpected {head!r}")
    word = head.lower()
    if not known_word(word):
        raise ConditionError(
            f"device condition {text!r}: unknown word {head!r}; known: {', '.join(GROUPS)}, smXY (GPU compute "
            f"capability), and the CPU features {', '.join(X86_FEATURES + ARM_FEATURES)}")
    return ("word", word), rest


def _eval(tree: Any, words: set[str]) -> bool:
    op = tree[0]
    if op == "word":
        return tree[1] in words
    if op == "not":
        return not _eval(tree[1], words)
    if op == "and":
        return _eval(tree[1], words) and _eval(tree[2], words)
    return _eval(tree[1], words) or _eval(tree[2], words)


@dataclass(frozen=True)
class Condition:
    """Backends (empty: any) and a device condition (None: any device)."""

    backends: tuple[str, ...] = ()
    device: DeviceExpr | None = None

    def holds(self, backend: str, words: Iterable[str]) -> bool:
        if self.backends and backend not in self.backends:
            return False
        return self.device is None or self.device.holds(words)

    def describe(self) -> str:
        parts = []
        if self.backends:
            parts.append("on " + " or ".join(self.backends))
        if self.device is not None:
            parts.append(f"where {self.device.text}")
        return ", ".join(parts) or "everywhere"

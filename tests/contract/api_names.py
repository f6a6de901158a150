"""The real TensorRT Python APIs the fakes must stay within, and the check that compares them.

* TensorRT 10.13: the published type stubs (``tensorrt_stubs`` 10.13.0.35), parsed (they need two repairs
  to parse at all, shared with the type-check test): classes, members, docstrings and the enum values the
  stubs record in comments.
* TensorRT 11.1: ``api/tensorrt-11.1.json``, extracted from the bindings' sources at the 11.1 release by
  ``api/pybind_names.py`` (no stubs or installable bindings exist for it here).
* TensorRT-RTX 1.7: the installed bindings themselves (``tensorrt_rtx_bindings``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).parent / "api"
VALUE = re.compile(r"# value = <\w+\.(\w+): (-?\d+)>")


def repair_stub_text(text: str) -> str:
    """The two things that keep the 10.13 stubs from parsing: parameters named ``in`` (a keyword), and one
    parameter without a default after defaulted ones."""
    text = re.sub(r"(\(|, )in: ", r"\1in_: ", text)
    return text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")


@dataclass
class Api:
    source: str
    module: set[str]
    classes: dict[str, set[str]]  # by class name (nested classes by their own name too)
    docs: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, int]] = field(default_factory=dict)
    overrides: dict[str, set[str]] = field(default_factory=dict)


def _stub_file(name: str) -> Path:
    files = importlib.metadata.files("tensorrt_stubs") or []
    for f in files:
        if str(f).replace("\\", "/").endswith(name):
            return Path(str(f.locate()))
    raise FileNotFoundError(f"tensorrt_stubs installs no {name}")


def stubs_api() -> Api:
    text = repair_stub_text(_stub_file("tensorrt_bindings/tensorrt.pyi").read_text())
    lines = text.splitlines()
    api = Api("tensorrt_stubs 10.13", set(), {})

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if not isinstance(node, ast.ClassDef):
                continue
            members, values = set(), {}
            for b in node.body:
                if isinstance(b, ast.FunctionDef):
                    members.add(b.name)
                elif isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name):
                    members.add(b.target.id)
                    m = VALUE.search(lines[b.lineno - 1])
                    if m and m.group(1) == b.target.id:
                        values[b.target.id] = int(m.group(2))
                elif isinstance(b, ast.ClassDef):
                    members.add(b.name)
            api.classes.setdefault(node.name, set()).update(members)
            api.docs[node.name] = ast.get_docstring(node) or ""
            if values:
                api.values[node.name] = values
            walk(node.body)

    walk(ast.parse(text).body)
    init = ast.parse(_stub_file("tensorrt/__init__.pyi").read_text())
    for node in init.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            api.module = set(ast.literal_eval(node.value))
    api.module.add("__version__")
    return api


def json_api(path: Path) -> Api:
    data = json.loads(path.read_text())
    classes = {k: set(v) for k, v in data["classes"].items()}
    return Api(data["source"], set(classes) | set(data["functions"]) | {"__version__"}, classes,
               values=data["values"], overrides={k: set(v) for k, v in data["overrides"].items()})


def module_api(mod: Any) -> Api:
    api = Api(f"{mod.__name__} {mod.__version__}", set(dir(mod)), {})

    def add(name: str, cls: type) -> None:
        api.classes[name] = {n for n in dir(cls) if not n.startswith("__")}
        api.docs[name] = cls.__doc__ or ""
        members = getattr(cls, "__members__", None)
        if isinstance(members, dict):
            api.values[name] = {k: int(v) for k, v in members.items()}
        for n in dir(cls):
            sub = getattr(cls, n, None)
            if isinstance(sub, type) and not n.startswith("_") and n not in api.classes:
                add(n, sub)

    for name in dir(mod):
        obj = getattr(mod, name)
        if isinstance(obj, type):
            add(name, obj)
    return api


@functools.cache
def real_api(flavor: str) -> Api | str:
    """The real API of a flavor, or why it cannot be read here."""
    if flavor == "trt10":
        if importlib.util.find_spec("tensorrt_stubs") is None:
            return "needs tensorrt_stubs (pip install --no-deps tensorrt_stubs==10.13.0.35.1)"
        return stubs_api()
    if flavor == "trt11":
        return json_api(API_DIR / "tensorrt-11.1.json")
    try:
        return module_api(importlib.import_module("tensorrt_rtx_bindings"))
    except Exception as exc:  # not installed, or its libraries fail to load
        return f"needs tensorrt-rtx-cu13-bindings (the .[rtx] extra): {type(exc).__name__}: {exc}"


def _public(cls: type) -> dict[str, Any]:
    return {k: v for k, v in vars(cls).items() if not k.startswith("_")}


def mismatches(fake: Any, api: Api, callbacks: dict[str, list[str]]) -> list[str]:
    """Every name the fake module has that the real API lacks, every enum value that differs, and every
    callback the fake calls that the real class neither has nor documents."""
    problems = []
    for name, obj in vars(fake).items():
        if name.startswith("_") and name != "__version__":
            continue
        if name not in api.module:
            problems.append(f"module: {name}")
        if isinstance(obj, type):
            problems += _class_mismatches(name, obj, api)
    for cls, methods in callbacks.items():
        if cls not in vars(fake):
            continue
        known = api.classes.get(cls, set()) | api.overrides.get(cls, set())
        doc = api.docs.get(cls, "")
        problems += [f"{cls}.{m} (callback)" for m in methods if m not in known and m not in doc]
    return problems


def _class_mismatches(name: str, cls: type, api: Api) -> list[str]:
    problems = []
    real = api.classes.get(name)
    if real is None:
        return [f"class {name}"]
    for member, value in _public(cls).items():
        if member not in real:
            problems.append(f"{name}.{member}")
        elif isinstance(value, type):
            problems += _class_mismatches(member, value, api)
    fake_values = getattr(cls, "__members__", None)
    if isinstance(fake_values, dict) and name in api.values:
        for member, v in fake_values.items():
            want = api.values[name].get(member)
            if want is not None and want != int(v):
                problems.append(f"{name}.{member} = {int(v)}, the real value is {want}")
    return problems

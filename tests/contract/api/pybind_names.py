"""Extract the Python names TensorRT's bindings define from their pybind11 sources (a maintenance script).

TensorRT 11 cannot be installed on the machines the contract suite runs on, and NVIDIA publishes no type
stubs for it, so the names the 11.x fake may use are checked against a list extracted from the bindings'
sources in the TensorRT OSS repository (``python/src/**/*.cpp``: ``py::class_`` / ``py::enum_``
declarations with their ``.def*`` / ``.value`` members, module functions, and the methods Python
subclasses override, found in the trampolines' ``getOverride`` / ``PYBIND11_OVERLOAD*_NAME`` calls), plus
the values of ``NetworkDefinitionCreationFlag`` from ``include/NvInfer.h``. Run on the 10.13 sources the
extraction agrees with the published 10.13 stubs (tensorrt_stubs) but for five write-only properties the
stubs omit.

    python tests/contract/api/pybind_names.py TENSORRT_CHECKOUT 11.1 COMMIT > tests/contract/api/tensorrt-11.1.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DECL = re.compile(r'py::(class_|enum_)\s*<[^;(){}]*?>\s*(?:(\w+)\s*\{|\()\s*(\w+)\s*,\s*"(\w+)"')
MEMBER = re.compile(r'\.(def|def_property|def_property_readonly|def_readwrite|def_readonly|def_static|value)'
                    r'\s*\(\s*"(\w+)"')
VARDEF = re.compile(r"\b(\w+)\s*\.def")
EXPORT = re.compile(r"\.export_values\s*\(")
MODDEF = re.compile(r'\bm\.def\s*\(\s*"(\w+)"')
OVERRIDE = re.compile(r'getOverride\(\s*static_cast<(?:const\s+)?(\w+)\s*\*>\(this\),\s*"(\w+)"'
                      r'|PYBIND11_OVERLOAD(?:_PURE)?_NAME\(\s*[^,]+,\s*(\w+),\s*"(\w+)"')


def extract(paths: list[Path]) -> dict[str, object]:
    classes: dict[str, set[str]] = {}
    overrides: dict[str, set[str]] = {}
    functions: set[str] = set()
    for path in paths:
        text = path.read_text()
        varmap: dict[str, str] = {}
        events = [(m.start(), "decl", m) for m in DECL.finditer(text)]
        events += [(m.start(), "mem", m) for m in MEMBER.finditer(text)]
        events += [(m.start(), "var", m) for m in VARDEF.finditer(text)]
        events += [(m.start(), "exp", m) for m in EXPORT.finditer(text)]
        events.sort(key=lambda e: (e[0], e[1] != "var"))
        current = scope = None
        for _, kind, m in events:
            if kind == "decl":
                var, scope_var, name = m.group(2), m.group(3), m.group(4)
                current, scope = name, varmap.get(scope_var)
                if var:
                    varmap[var] = name
                classes.setdefault(name, set())
            elif kind == "var" and m.group(1) in varmap:
                current, scope = varmap[m.group(1)], None
            elif kind == "mem" and current is not None:
                classes[current].add(m.group(2))
            elif kind == "exp" and current is not None and scope is not None:
                classes[scope] |= {v for v in classes[current] if v.isupper()} | {current}
        functions |= set(MODDEF.findall(text))
        for m in OVERRIDE.finditer(text):
            cls, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            overrides.setdefault(cls, set()).add(name)
    return {"classes": {k: sorted(v) for k, v in sorted(classes.items())},
            "functions": sorted(functions),
            "overrides": {k: sorted(v) for k, v in sorted(overrides.items())}}


def enum_values(header: Path, enum: str) -> dict[str, int]:
    text = header.read_text()
    body = re.search(r"enum class " + enum + r"\b[^{]*\{(.*?)\};", text, re.S)
    assert body, enum
    code = re.sub(r"//[^\n]*", "", body.group(1))
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\bk(\w+)\b[^=,]*=\s*(\d+)", code)}


def main(checkout: str, version: str, commit: str) -> None:
    root = Path(checkout)
    sources = sorted((root / "python" / "src").rglob("*.cpp"))
    out = {"tensorrt": version, "source": f"github.com/NVIDIA/TensorRT {commit}: python/src, include/NvInfer.h",
           **extract(sources),
           "values": {"NetworkDefinitionCreationFlag": enum_values(root / "include" / "NvInfer.h",
                                                                   "NetworkDefinitionCreationFlag")}}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""The recipe's ONNX file as a TensorRT network: parsing, and parse errors that name the nodes.

``distinct_dim_names`` and the error translation need no TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BuildError
from ...profiles import Profile

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt


def distinct_dim_names(model: Any, profile: Profile) -> list[str]:
    """Give dims that share a name but get different values in the profile names of their own (in place).

    TensorRT takes input dimensions with the same name to be equal; exporters reuse placeholders such as
    "?" for unrelated dimensions (PP-OCR's direction classifier names height and width both "?"). Returns
    what was renamed.
    """
    values: dict[str, set[tuple[str, int]]] = {}
    for inp in model.graph.input:
        if inp.name not in profile.opt:
            continue
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):
                for which in ("min", "opt", "max"):
                    values.setdefault(d.dim_param, set()).add((which, getattr(profile, which)[inp.name][axis]))
    conflicting = {name for name, v in values.items() if len({w for w, _ in v}) < len(v)}
    renamed = []
    for inp in model.graph.input:
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param") and d.dim_param in conflicting:
                new = f"{d.dim_param}__{inp.name}_{axis}"
                renamed.append(f"{inp.name}[{axis}]: {d.dim_param!r} -> {new!r}")
                d.dim_param = new
    return renamed


@dataclass(frozen=True)
class ParseError:
    """What TensorRT's ONNX parser says about one failing node."""

    node: int
    node_name: str
    operator: str
    description: str
    code: str = ""


def parse_errors(parser: Any) -> list[ParseError]:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        errors.append(ParseError(
            node=int(e.node()), node_name=_call(e, "node_name"), operator=_call(e, "node_operator"),
            description=str(e.desc()), code=str(getattr(e.code(), "name", e.code()))))
    return errors


def _call(obj: Any, name: str) -> str:
    fn = getattr(obj, name, None)  # node_name / node_operator exist from TensorRT 10 on
    return str(fn()) if callable(fn) else ""


def parse_error_message(model: Path, errors: Sequence[ParseError]) -> str:
    lines = [f"TensorRT's ONNX parser rejected {model} ({len(errors)} error(s)):"]
    for e in errors:
        where = f"node #{e.node}"
        if e.node_name:
            where += f" {e.node_name!r}"
        if e.operator:
            where += f" ({e.operator})"
        lines.append(f"  {where}: {e.description}" + (f" [{e.code}]" if e.code else ""))
    return "\n".join(lines)


def parse_onnx(parser: trt.OnnxParser, model: Path, profile: Profile) -> list[str]:
    """Parse ``model`` into the parser's network; returns the input dims renamed on the way (see
    ``distinct_dim_names``), or raises BuildError naming the failing nodes."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    renamed = distinct_dim_names(proto, profile)
    # parse the file itself unless its input dim names had to be made distinct
    ok = (parser.parse(proto.SerializeToString(), str(model)) if renamed
          else parser.parse_from_file(str(model)))
    if not ok:
        raise BuildError(parse_error_message(model, parse_errors(parser)))
    return renamed

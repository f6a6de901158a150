"""The doctor's results in words: the report's "Precision doctor" section and the terminal summary, both from
:class:`~harness.rows.DoctorRow` rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from ..accuracy import fmt
from ..rows import DoctorRow

STATUS = {"fixed": "fixed", "no fix": "**no fix found**", "passes": "passes already", "error": "**ERROR**"}


def _err(v: Any) -> str:
    return "–" if v is None else fmt(float(v))


def _gate(g: dict[str, Any]) -> str:
    if not g:
        return "–"
    parts = [f"{v['budget']}: {_err(v.get('value'))}{'' if v.get('passed') else ' ✗'}" for v in g.get("values", [])]
    if g.get("nonfinite_samples"):
        parts.append(f"{g['nonfinite_samples']} samples NaN/Inf ✗")
    return "; ".join(parts) + (" → pass" if g.get("passed") else " → fail")


def price_lines(row: DoctorRow) -> list[str]:
    p = row.price
    tp = p.get("throughput") or {}
    if not tp:
        return []
    table = []
    for role in ("fixed", "failing", "fp32"):
        if role not in tp:
            continue
        x = tp[role]
        table.append([role, p.get("recipes", {}).get(role, role), f"{x:.4g}",
                      f"{x / tp['failing']:.2f}x" if tp.get("failing") else "–",
                      f"{x / tp['fp32']:.2f}x" if tp.get("fp32") else "–",
                      "" if p.get("stable", {}).get(role, True) else "unstable"])
    return [f"Price: serial throughput on {row.backend} at batch {p.get('batch')} ({p.get('threads')} threads; best "
            f"of {p.get('rounds')} alternated runs of {p.get('seconds')} s each).", "",
            tabulate(table, headers=["", "recipe", "samples/s", "vs failing", "vs fp32", ""], tablefmt="github",
                     disable_numparse=True), ""]


def node_table(row: DoctorRow) -> list[str]:
    first = (row.first_over or {}).get("node")
    table = [[n["order"], f"**{n['node']}**" if n["node"] == first else n["node"], n["op"], n["tensor"],
              _err(n.get("local")), _err(n.get("cumulative")), _err(n.get("cumulative_max")),
              fmt(float(n["fp32_absmax"])), "yes" if n.get("kept") else ""] for n in row.nodes]
    return [tabulate(table, headers=["#", "node", "op", "tensor", "adds (local)", "carries (cumulative)",
                                     "cumulative max", "max abs fp32", "kept in fix"], tablefmt="github",
                     disable_numparse=True), ""]


def reads_lines(row: DoctorRow) -> list[str]:
    """INT8: what keeping a node does in ONNX Runtime's quantizer, where it is not the whole node."""
    if row.recipe_kind != "int8" or not row.keep_fp32:
        return []
    if not row.kept_read_dequantized:
        return ["The kept nodes have FP32 weights and arithmetic and read their inputs unquantized."]
    read = "; ".join(f"{n} (`{'`, `'.join(ts)}`)" for n, ts in row.kept_read_dequantized.items())
    return [f"The kept nodes have FP32 weights and arithmetic; {len(row.kept_read_dequantized)} of them still read "
            f"an input through a Q/DQ pair, because a quantized node reads it too (ONNX Runtime quantizes a tensor "
            f"once for all its readers): {read}."]


def doctor_section(rows: Iterable[Any]) -> list[str]:
    doc = sorted((r for r in rows if isinstance(r, DoctorRow)), key=lambda r: r.label)
    if not doc:
        return []
    out = ["## Precision doctor", "",
           "For an accuracy case that failed: the recipe's model against the FP32 model node by node on a few "
           "samples (ONNX Runtime CPU, graph optimizations off), the relative L2 error each node *adds* (run alone "
           "on FP32 inputs) and *carries* (cumulative), the most sensitive nodes and, in bold, the first whose "
           "error passes the budgets' scale; then the fewest nodes kept in FP32 for which the budgets pass on the "
           "whole evaluation set, as a recipe, and its price.", ""]
    for r in doc:
        out += [f"### {r.label}: {STATUS.get(r.status, r.status)}", ""]
        if r.status == "error":
            out += ["```", (r.message or "").strip(), "```", ""]
            continue
        c = r.compare
        kind = "quantized" if r.recipe_kind == "int8" else "converted"
        out.append(f"Budgets: {'; '.join(r.budget_labels)}; error scale {_err(r.scale)} ({r.scale_source}).")
        first = r.first_over
        out.append(f"First node past the scale: **{first['node']}** ({first['op']}, tensor `{first['tensor']}`: "
                   f"carries {_err(first['cumulative'])}, adds {_err(first.get('local'))})." if first else
                   "No node's error passes the scale on the samples compared.")
        out.append(f"Compared {r.nodes_compared} nodes on {r.samples} samples in {c.get('chunks')} chunks of at most "
                   f"{c.get('chunk')} tensors: {c.get('seconds')} s{' (cached)' if c.get('cached') else ''}, tensors "
                   f"held at most {c.get('held_peak_mb')} MB, process RSS peak {c.get('rss_peak_mb')} MB.")
        out.append("")
        out += node_table(r)
        out.append(f"Before: {_gate(r.gate_before)}.")
        if r.status == "fixed":
            out.append(f"After (re-gated as written, {r.eval_samples} samples): {_gate(r.gate_after)}.")
            out.append(f"Keeps **{len(r.keep_fp32)} of {r.candidates}** {kind} nodes in FP32, found in "
                       f"{len(r.search)} gates ({sum(s['seconds'] for s in r.search):.0f} s)"
                       + (f"; {r.reason}" if r.reason else "") + ".")
            out += reads_lines(r)
            out += ["", "```toml", (r.toml or "").rstrip(), "```", ""]
            out += price_lines(r)
        else:
            out += [f"{r.reason or ''}", ""]
    return out


def terminal_lines(rows: Iterable[DoctorRow]) -> list[str]:
    """A few lines per case for the terminal summary."""
    lines = []
    for r in rows:
        head = f"doctor {r.label}: {r.status}"
        if r.status == "error":
            lines.append(f"{head}: {r.message}")
            continue
        first = r.first_over
        if first:
            head += f"; error passes {_err(r.scale)} first at {first['node']} ({first['op']})"
        lines.append(head)
        if r.status == "fixed":
            tp = r.price.get("throughput", {})
            cost = ", ".join(f"{tp['fixed'] / tp[k]:.2f}x {k}" for k in ("failing", "fp32") if tp.get(k))
            lines.append(f"  keep {len(r.keep_fp32)} of {r.candidates} nodes in FP32: {', '.join(r.keep_fp32[:6])}"
                         + (", ..." if len(r.keep_fp32) > 6 else ""))
            if r.kept_read_dequantized:
                lines.append(f"  {len(r.kept_read_dequantized)} kept node(s) still read an input quantized for other "
                             f"readers: {', '.join(list(r.kept_read_dequantized)[:6])}")
            lines.append(f"  after: {_gate(r.gate_after)}; serial throughput {cost}")
            lines.append(f"  recipe: {r.toml_path}")
        elif r.reason:
            lines.append(f"  {r.reason}")
    return lines

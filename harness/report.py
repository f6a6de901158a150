"""REPORT.md, derived from result rows and never kept by hand.

One accuracy table per model (backend, recipe, profile, samples, the error statistics, the budgets and the
verdict, plus how the artifact was built), the failures with their worst samples, and the environment.
The perf section is rendered by :mod:`harness.perf_report`, the stations by :mod:`harness.stations.report`
(which writes its plot beside the report), the precision doctor's findings by :mod:`harness.doctor.report`, the
comparison with a baseline by :mod:`harness.compare`, the trends over a history database by :mod:`harness.trends`, the same cases on several devices side by side by
:mod:`harness.device_report` (the tables then get a *device* column). Everything reads typed rows
(:mod:`harness.rows`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .accuracy import fmt
from .device_id import device_key
from .device_report import cross_device_section, labels, several
from .results import RESULTS, Results, by_model, load_results, write_text_atomic
from .rows import AccuracyRow, AnyRow, BuildRow

REPORT = "REPORT.md"
STATUS_MARK = {"pass": "pass", "fail": "**FAIL**", "error": "**ERROR**", "unbudgeted": "no budget",
               "known failure": "fails (known)", "skipped": "skipped",
               "no-op": "no-op (changed nothing)"}
# task metrics shown in the accuracy table, with the statistic that shows where samples go wrong
TASK_COLUMNS = (("iou", "p1"), ("dice", "p1"), ("abs_err", "p99"), ("abs_err_max", "max"), ("ctc_exact", "mean"),
                ("label_top1", "mean"), ("label_iou", "mean"), ("label_dice", "mean"), ("label_abs_err", "mean"),
                ("label_ctc_exact", "mean"))


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return fmt(float(v)) if isinstance(v, float) else str(v)
    return str(v)


def _pct(v: Any) -> str:
    if v is None:
        return "–"
    return f"{100.0 * float(v):.2f} %"


def _size(n: Any) -> str:
    if not n:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


KIND_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}


SHAPE_ORDER = {"min": 0, "opt": 1, "max": 2}


def recipe_order(row: AnyRow) -> tuple[Any, ...]:
    """Rows in reading order: backend, then precision from fp32 down to int8, then recipe, profile and the shape
    of the profile (min, opt, max, the extra shapes)."""
    shape = str(getattr(row, "shape", "opt"))
    return (row.backend, KIND_ORDER.get(str(row.recipe_kind), 9), row.recipe, row.profile,
            SHAPE_ORDER.get(shape, 3), shape)


def profile_label(row: AccuracyRow) -> str:
    """"dynamic" at the profile's opt shape, "dynamic @max" (with the shapes) at another point of it."""
    if row.shape == "opt":
        return row.profile
    return f"{row.profile} @{row.shape}" + (f" ({row.shape_dims})" if row.shape_dims else "")


def calibration_label(row: AccuracyRow) -> str:
    if row.recipe_kind != "int8":
        return "–"
    info, params = row.recipe_info, row.recipe_params
    weights = "per-channel" if params.get("per_channel") else "per-tensor"
    samples = f"{info.get('calibration_samples', '?')} {info.get('calibration_source', '?')}"
    return f"{params.get('method', '?')}, {weights}, {samples}"


def recipe_summary(row: AccuracyRow) -> str:
    """What a recipe did to the graph, in one line (``recipe_info`` is the recipe's own free-form record)."""
    info = row.recipe_info
    kind = row.recipe_kind
    parts: list[str] = []
    if info.get("opset_upgraded_to"):
        parts.append(f"opset upgraded to {info['opset_upgraded_to']}")
    if kind in ("fp16", "bf16"):
        converted = sum((info.get("nodes_converted") or {}).values())
        parts.append(f"{converted} nodes in {kind}, {info.get('nodes_kept_fp32_count', 0)} kept in fp32")
        folded = info.get("batchnorm_folded_into_conv", 0) + info.get("batchnorm_to_mul_add", 0)
        if folded:
            parts.append(f"{folded} BatchNorms folded")
        parts.append(f"{info.get('casts_inserted', 0)} casts")
        for key, label in (("weights_clamped", "weights clamped"), ("weights_underflowed", "weights underflowed")):
            if info.get(key):
                parts.append(f"{info[key]} {label}")
    elif kind == "int8":
        quantized = sum((info.get("nodes_quantized") or {}).values())
        left = sum((info.get("nodes_left_fp32") or {}).values())
        parts.append(f"{info.get('qdq_pairs', 0)} Q/DQ pairs, {quantized} nodes on int8 inputs, {left} left in fp32")
    validation = info.get("validation") or {}
    if str(validation.get("onnxruntime_cpu", "")).startswith("cannot"):
        parts.append("ORT CPU cannot run it")
    if info.get("warning"):
        parts.append(f"WARNING: {info['warning']}")
    return "; ".join(parts) or "–"


def task_summary(row: AccuracyRow) -> str:
    """The task metrics of a row, e.g. ``iou p1 0.91; label_top1 mean 0.71 (fp32 0.72)``."""
    parts = []
    for metric, stat in TASK_COLUMNS:
        key = f"{metric}.{stat}"
        if key in row.metrics:
            ref = f" (fp32 {_num(row.fp32_label_metrics[key])})" if key in row.fp32_label_metrics else ""
            parts.append(f"{metric} {stat} {_num(row.metrics[key])}{ref}")
    return "; ".join(parts) or "–"


def accuracy_section(rows: list[AnyRow]) -> list[str]:
    acc = [r for r in rows if isinstance(r, AccuracyRow)]
    if not acc:
        return []
    names = labels(rows) if several(rows) else {}
    out = ["## Accuracy against the ONNX Runtime FP32 reference", "",
           "Per sample: relative L2 error `‖y−r‖/‖r‖`; *share > 1 %* is the share of samples whose relative "
           "error exceeds 1 %; *cosine p1*: 99 % of samples have at least this cosine similarity; *top-1* is "
           "argmax agreement with the reference. Statistics are over the evaluation set; the worst output of the "
           "model is shown.", ""]
    for model, mrows in by_model(acc).items():
        arows = sorted(mrows, key=recipe_order)
        out.append(f"### {model}")
        out.append("")
        table = []
        tasks = any(task_summary(r) != "–" for r in arows)
        for r in arows:
            m = r.metrics
            table.append([
                *([names[device_key(r.device)]] if names else []),
                r.backend, r.recipe, profile_label(r), calibration_label(r), _num(r.samples),
                _num(m.get("rel_l2.mean")), _num(m.get("rel_l2.p99")), _num(m.get("rel_l2.max")),
                _pct(m.get("rel_l2.share_over_0.01")), _num(m.get("cosine.min")), _num(m.get("cosine.p1")),
                _pct(m["top1.mean"]) if "top1.mean" in m else "–",
                *([task_summary(r)] if tasks else []),
                "; ".join(sorted({b.budget for b in r.budgets})) or "–",
                STATUS_MARK.get(r.status, r.status),
            ])
        out.append(tabulate(table, headers=[*(["device"] if names else []), "backend", "recipe", "profile",
                                            "calibration", "samples", "rel_l2 mean",
                                            "rel_l2 p99",
                                            "rel_l2 max", "share > 1 %", "cosine min", "cosine p1", "top-1",
                                            *(["task metrics"] if tasks else []), "budgets", "status"],
                            tablefmt="github", disable_numparse=True))
        out.append("")
        recipes = {r.recipe: r for r in arows if r.recipe_info}
        if recipes:
            out.append("Recipes: " + " · ".join(f"**{name}** {recipe_summary(r)}" for name, r in recipes.items()))
            out.append("")
        build = [r for r in arows if r.engine_size and r.shape == "opt"]  # one engine serves every shape
        if build:
            out.append("<details><summary>artifacts</summary>")
            out.append("")
            out.append(tabulate(
                [[r.backend, r.recipe, r.profile, _num(r.recipe_seconds), _num(r.build_seconds),
                  _size(r.engine_size), "hit" if r.cache_hit else "built", str(r.engine_key or "")[:12]]
                 for r in build],
                headers=["backend", "recipe", "profile", "recipe s", "build s", "engine size", "cache", "key"],
                tablefmt="github", disable_numparse=True))
            out.append("")
            out.append("</details>")
            out.append("")
    return out


def int8_section(rows: list[AnyRow]) -> list[str]:
    """INT8 cases: the recipe's own error (its Q/DQ simulated in float) against the backend kernels' share."""
    int8 = sorted((r for r in rows if isinstance(r, AccuracyRow) and r.simulated),
                  key=lambda r: (r.model, *recipe_order(r)))
    if not int8:
        return []
    table = []
    for r in int8:
        m, sim, ker = r.metrics, r.simulated, r.kernel_error
        table.append([r.model, r.backend, r.recipe, r.profile, _num(sim.get("rel_l2.mean")),
                      _num(m.get("rel_l2.mean")), _num(ker.get("rel_l2.mean")), _num(ker.get("rel_l2.p99")),
                      "**kernels**" if r.kernel_dominated else "quantization", STATUS_MARK.get(r.status, r.status)])
    out = ["## INT8: the quantization against the kernels", "",
           "*as defined*: the recipe's artifact run as its ONNX says (ONNX Runtime CPU, graph optimizations off: "
           "each DequantizeLinear, then the float operator), against the FP32 reference; *backend*: what the "
           "backend's int8 kernels give; *kernel error*: the backend against the artifact as defined. Where the "
           "kernel error is the larger, the kernels, not the quantization, decide the verdict.", "",
           tabulate(table, headers=["model", "backend", "recipe", "profile", "rel_l2 mean as defined",
                                    "rel_l2 mean backend", "kernel error mean", "kernel error p99", "dominated by",
                                    "status"], tablefmt="github", disable_numparse=True), ""]
    notes = sorted({n for r in int8 for n in r.notes if "16 bits" in n})
    out += [f"Note: {n}" for n in notes]
    return out + ([""] if notes else [])


def build_section(rows: list[AnyRow]) -> list[str]:
    builds = sorted((r for r in rows if isinstance(r, BuildRow) and r.status == "pass"),
                    key=lambda r: (r.model, *recipe_order(r)))
    if not builds:
        return []
    table = [[r.model, r.backend, _num(r.backend_version), r.recipe, r.profile, _size(r.engine_size),
              _num(r.build_seconds), "hit" if r.cache_hit else "built", str(r.engine_key or "")[:12]]
             for r in builds]
    return ["## Engines built", "", "Built and cached by `pytest -m build` (nothing run); *build s* is the build's "
            "own time when it was built.", "",
            tabulate(table, headers=["model", "backend", "version", "recipe", "profile", "size", "build s", "cache",
                                     "key"], tablefmt="github", disable_numparse=True), ""]


def failures_section(rows: list[AnyRow]) -> list[str]:
    out: list[str] = []
    for title, statuses in (("Failures", ("fail", "error")), ("Known failures", ("known failure",)),
                            ("Recipes that changed nothing (no-op)", ("no-op",))):
        bad = [r for r in rows if r.status in statuses]
        if not bad:
            continue
        out += [f"## {title}", ""]
        for r in bad:
            out.append(f"### {r.label}")
            out.append("")
            if isinstance(r, AccuracyRow) and r.known_failure:
                out += [f"Known: {r.known_failure}", ""]
            out += ["```", (r.message or "").strip(), "```", ""]
    skipped: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.status == "skipped":
            skipped[(r.message or "").strip()].append(r.label)
    if skipped:
        out += ["## Skipped", "", "Cases that started and found they cannot run here, by reason.", ""]
        for reason, ids in sorted(skipped.items(), key=lambda kv: -len(kv[1])):
            out.append(f"- **{len(ids)}** ({', '.join(ids[:4])}{', ...' if len(ids) > 4 else ''}): {reason}")
        out.append("")
    return out


def environment_section(env: dict[str, Any]) -> list[str]:
    if not env:
        return []
    keys = sorted(env)
    return ["## Environment", "", tabulate([[k, " ".join(map(str, env[k])) if isinstance(env[k], list) else env[k]]
                                            for k in keys], headers=["", ""], tablefmt="github",
                                           disable_numparse=True), ""]


def render(data: Results, *, extra_sections: Iterable[list[str]] = (), report_dir: Path | None = None) -> str:
    rows = data.rows
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.status or "?"] += 1
    head = [
        "# Harness report",
        "",
        f"Updated {data.updated or '?'} (last run `{data.last_run or '?'}`). "
        f"{len(rows)} results: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".",
        "",
        "Generated from `results.json`; re-render with `python -m harness report DIR`.",
        "",
    ]
    from .deployment_report import deployment_sections
    from .doctor.report import doctor_section
    from .perf_report import perf_sections
    from .stations.report import station_section

    parts = [head, cross_device_section(rows), accuracy_section(rows), int8_section(rows), *perf_sections(rows),
             station_section(rows, report_dir), *deployment_sections(rows, report_dir),
             build_section(rows),
             failures_section(rows),
             doctor_section(rows),
             *extra_sections,
             environment_section(data.environment)]
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"


def write_report(report_dir: Path, data: Results | None = None, *, extra_sections: Iterable[list[str]] = (),
                 history: Path | None = None) -> Path:
    """REPORT.md (and its plots, with matplotlib) from results.json; with a ``history`` database, the
    trends of this report's cases over the runs it holds, and their change points."""
    from .plots import write_plots

    if data is None:
        data = load_results(report_dir / RESULTS)
    sections = [*extra_sections]
    if history is not None:
        from .trends import trend_section

        sections.append(trend_section(history, data.rows, report_dir))
    sections.append(write_plots(report_dir, data.rows))
    path = report_dir / REPORT
    write_text_atomic(path, render(data, extra_sections=sections, report_dir=report_dir))
    return path

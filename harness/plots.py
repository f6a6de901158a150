"""Plots beside REPORT.md (with the ``plots`` extra, matplotlib): per model, throughput against batch size
for each mode and N, and the p99 relative error of each recipe and backend; with a history database, each
case's key number over the nightly runs with its fitted steps (:func:`write_trend_plots`). Without
matplotlib the report says how to get them."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .results import by_model
from .rows import AccuracyRow, AnyRow, PerfRow

PLOTS = "plots"
MISSING = ["Install the `plots` extra (matplotlib) to get plots next to this report.", ""]


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report_dir: Path, rows: list[AnyRow]) -> list[str]:
    """Write the PNGs; return REPORT.md lines that show them."""
    if not rows:
        return []
    if not available():
        return ["## Plots", "", *MISSING]
    plt = _pyplot()
    folder = report_dir / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["## Plots", ""]
    from .device_id import device_key
    from .device_report import labels, several

    names = labels(rows) if several(rows) else {}

    def at(r: AnyRow) -> str:  # on several devices, which one
        return f" @ {names[device_key(r.device)]}" if names else ""

    perf = by_model(r for r in rows if isinstance(r, PerfRow) and r.throughput)
    acc = by_model(r for r in rows if isinstance(r, AccuracyRow) and r.metrics.get("rel_l2.p99") is not None)

    def save(fig: Any, name: str, title: str, dpi: int) -> None:
        fig.savefig(folder / name, dpi=dpi)
        plt.close(fig)
        lines.append(f"![{title}]({PLOTS}/{name})")
    for model, rs in sorted(perf.items()):
        panels: dict[str, list[PerfRow]] = defaultdict(list)
        for r in rs:
            panels[f"{r.backend} {r.recipe}{at(r)}"].append(r)
        cols = min(2, len(panels))
        nrows = -(-len(panels) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.6 * nrows), squeeze=False, sharey=True)
        for ax, (title, prs) in zip(axes.flat, sorted(panels.items())):
            series: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for r in prs:
                label = r.config.replace(f" b{r.batch}", "")
                series[label].append((r.batch, float(r.throughput or 0.0)))
            for label, pts in sorted(series.items()):
                pts = sorted(set(pts))
                style = "--" if "+graph" in label else "-"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.set_ylabel("samples / s")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(f"{model}: throughput")
        fig.tight_layout()
        save(fig, f"{model}-throughput.png", f"{model} throughput", 100)
    for model, ars in sorted(acc.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ars = sorted(ars, key=lambda r: (r.backend, str(r.recipe_kind), r.recipe, r.profile))
        bars = [f"{r.backend} {r.recipe} {r.profile}{at(r)}" for r in ars]
        values = [max(float(r.metrics["rel_l2.p99"] or 0.0), 1e-9) for r in ars]
        colors = ["tab:red" if r.status in ("fail", "known failure") else "tab:blue" for r in ars]
        ax.bar(range(len(ars)), values, color=colors)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ars)), bars, fontsize=5, rotation=90)
        ax.set_ylabel("p99 relative L2 error")
        ax.set_title(f"{model}: accuracy against the FP32 reference (red: gate fails)")
        fig.tight_layout()
        save(fig, f"{model}-accuracy.png", f"{model} accuracy", 110)
    lines.append("")
    return lines


def write_trend_plots(report_dir: Path, model: str, panels: Sequence[Any], *, columns: int = 3) -> str | None:
    """One PNG per model: a panel per case, its number over the runs and the fitted levels, each change
    point marked. ``panels``: :class:`harness.trends.Trend`. Returns the PNG's name, or None without
    matplotlib."""
    if not panels or not available():
        return None
    plt = _pyplot()
    folder = report_dir / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    cols = min(columns, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, t in zip(axes.flat, panels):
        x = t.positions  # runs where the case was not measured (or unstable) leave gaps
        ax.plot(x, t.values, ".", color="0.3", markersize=4)
        for seg in t.segments:
            ax.plot([x[seg.start] - 0.4, x[seg.end - 1] + 0.4], [seg.level, seg.level], "-", color="tab:blue",
                    linewidth=1.5)
        for c in t.changes:
            bad = c.direction(t.better) == "regression"
            ax.axvline(x[c.index] - 0.5, color="tab:red" if bad else "tab:green", linestyle="--", linewidth=1)
        ax.set_title(f"{t.case}\n{t.number}", fontsize=6)
        ax.tick_params(labelsize=5)
        ax.set_xlabel("run (oldest first; first change run marked)", fontsize=5)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{model}: nightly trends (dashed: change points, red worse, green better)", fontsize=8)
    fig.tight_layout()
    name = f"{model}-trends.png"
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)
    return name

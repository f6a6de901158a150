"""Plots beside REPORT.md (with the ``plots`` extra, matplotlib): per model, throughput against batch size
for each mode and N, and the p99 relative error of each recipe and backend. Without matplotlib the report
says how to get them."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

from .results import by_model

PLOTS = "plots"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plots(report_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Write the PNGs; return REPORT.md lines that show them."""
    if not rows:
        return []
    if not available():
        return ["## Plots", "", "Install the `plots` extra (matplotlib) to get plots next to this report.", ""]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = report_dir / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["## Plots", ""]
    perf = by_model(r for r in rows if r.get("type") == "perf" and r.get("throughput"))
    acc = by_model(r for r in rows
                   if r.get("type") == "accuracy" and (r.get("metrics") or {}).get("rel_l2.p99") is not None)

    def save(fig: Any, name: str, title: str, dpi: int) -> None:
        fig.savefig(folder / name, dpi=dpi)
        plt.close(fig)
        lines.append(f"![{title}]({PLOTS}/{name})")
    for model, rs in sorted(perf.items()):
        panels: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            panels[f"{r['backend']} {r['recipe']}"].append(r)
        cols = min(2, len(panels))
        nrows = -(-len(panels) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.6 * nrows), squeeze=False, sharey=True)
        for ax, (title, prs) in zip(axes.flat, sorted(panels.items())):
            series: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for r in prs:
                label = r["mode"] + (f" n{r['concurrency']}" if r["mode"] != "serial" else "") \
                    + (" +graph" if r.get("cuda_graph") else "") + ("" if r.get("resident", True) else " +copy")
                series[label].append((int(r["batch"]), float(r["throughput"])))
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
    for model, rs in sorted(acc.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        rs = sorted(rs, key=lambda r: (r["backend"], str(r.get("recipe_kind")), r["recipe"], r["profile"]))
        labels = [f"{r['backend']} {r['recipe']} {r['profile']}" for r in rs]
        values = [max(float(r["metrics"]["rel_l2.p99"]), 1e-9) for r in rs]
        colors = ["tab:red" if r.get("status") in ("fail", "known failure") else "tab:blue" for r in rs]
        ax.bar(range(len(rs)), values, color=colors)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rs)), labels, fontsize=5, rotation=90)
        ax.set_ylabel("p99 relative L2 error")
        ax.set_title(f"{model}: accuracy against the FP32 reference (red: gate fails)")
        fig.tight_layout()
        save(fig, f"{model}-accuracy.png", f"{model} accuracy", 110)
    lines.append("")
    return lines

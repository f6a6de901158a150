"""The station section of REPORT.md: the seed's table, generated, and a plot of speed-up against batch.

Per station, backend, recipes and batch, one line per mode: the cycle time (mean time per frame for all the
station's models) and its p99, the serial time it is compared with (the serial mode's cycle time at the
same batch: the models run in turn on one thread), the speed-up, frames per second (and whether the
station's frame rate is held: p99 cycle within 1 / fps), GPU memory (NVML, the peak during the window, and
what it rose by over the memory in use before the mode's runners were made), CPU and GPU utilisation. The
fastest mode among the stable rows of each group is marked **best**. Rows are typed :class:`StationRow`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..perf_report import short
from ..results import by_model
from ..rows import AnyRow, StationRow

MODE_ORDER = {"serial": 0, "multistream": 1, "threadpool": 2, "merged": 3}
PLOT = "stations-speedup.png"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _group(r: StationRow) -> tuple[Any, ...]:
    """Rows compared with each other: same station, backend, recipes, batch and options, modes differing."""
    return r.model, r.backend, r.recipe, r.profile, r.batch, r.resident, r.cuda_graph


def _order(r: StationRow) -> tuple[Any, ...]:
    return (r.backend, r.recipe, r.profile, not r.resident, r.cuda_graph, r.batch, MODE_ORDER.get(r.mode, 9))


def serial_of(rows: list[StationRow]) -> dict[tuple[Any, ...], StationRow]:
    return {_group(r): r for r in rows if r.mode == "serial"}


def speedups(rows: list[StationRow]) -> dict[str, float | None]:
    """Row id -> the serial cycle time of its group over its own (None where no serial row was measured)."""
    serial = serial_of(rows)
    out: dict[str, float | None] = {}
    for r in rows:
        base = serial.get(_group(r))
        base_ms = base.cycle_ms if base is not None else None
        out[r.label] = base_ms / r.cycle_ms if base_ms and r.cycle_ms else None
    return out


def best_rows(rows: list[StationRow]) -> set[str]:
    """The fastest stable row of each group (stable rows only: an unstable time wins nothing)."""
    groups: dict[tuple[Any, ...], list[StationRow]] = defaultdict(list)
    for r in rows:
        if r.stable and r.cycle_ms:
            groups[_group(r)].append(r)
    return {min(rs, key=lambda r: r.cycle_ms or float("inf")).label for rs in groups.values() if len(rs) > 1}


def _memory(r: StationRow) -> str:
    peak, before = r.resources.get("gpu_mem_peak_mb"), r.resources.get("gpu_mem_before_mb")
    if not peak:
        return "–"
    return f"{peak:.0f}" + (f" (+{peak - before:.0f})" if before is not None else "")


def _holds(r: StationRow) -> str:
    p99 = r.latency_ms.get("p99")
    if not r.fps_target or p99 is None:
        return "–"
    return "yes" if p99 <= 1e3 / r.fps_target else "**no**"


def station_table(rows: list[StationRow]) -> str:
    ups, best = speedups(rows), best_rows(rows)
    serial = serial_of(rows)
    fps = any(r.fps_target for r in rows)
    gpu = any(r.resources.get("gpu_mem_peak_mb") or r.resources.get("gpu_util") is not None for r in rows)
    table = []
    for r in sorted(rows, key=_order):
        base = serial.get(_group(r))
        up = ups.get(r.label)
        mode = r.mode + ("" if r.resident else " +copy") + (" +graph" if r.cuda_graph else "")
        line = [r.backend, r.recipe, r.batch, mode, _ms(r.cycle_ms), _ms(r.latency_ms.get("p99")),
                _ms(base.cycle_ms) if base else "–", f"{up:.2f}x" if up else "–", short(r.fps)]
        if fps:
            line.append(_holds(r))
        res = r.resources
        line += [_memory(r)] if gpu else []
        line += [short(res.get("cpu_util"))] + ([short(res.get("gpu_util"))] if gpu else [])
        line += [r.threads_per_runner or "–", "yes" if r.stable else "**no**", "**best**" if r.label in best else ""]
        table.append(line)
    headers = ["backend", "recipe", "batch", "mode", "cycle ms", "p99 ms", "serial ms", "speed-up", "frames/s"]
    if fps:
        target = next(r.fps_target for r in rows if r.fps_target)
        headers.append(f"holds {target:g} fps")
    headers += (["GPU MB", "CPU %", "GPU util %"] if gpu else ["CPU %"]) + ["threads", "stable", ""]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _notes(rows: list[StationRow]) -> list[str]:
    notes = []
    for r in sorted(rows, key=_order):
        who = f"{r.backend} {r.recipe} b{r.batch}"
        if r.mode == "serial" and r.member_ms:
            parts = " + ".join(f"{m['model']} {_ms(t)}" for m, t in zip(r.members, r.member_ms))
            notes.append(f"serial {who}: {parts} ms")
        check = r.merged.get("check") if r.mode == "merged" else None
        if check:
            tol = max(o["tolerance"] for o in check["outputs"])
            notes.append(f"merged {who}: {len(check['outputs'])} outputs against the separate models', max rel_l2 "
                         f"{check['max_rel_l2']:.3g} (within {tol:g}: {'yes' if check['passed'] else '**no**'})")
    return notes


def write_plot(folder: Path, rows: list[StationRow]) -> str | None:
    """Speed-up over serial against batch, a panel per station and backend, a line per mode; None without
    matplotlib or without two batches to draw."""
    from ..plots import _pyplot, available

    ups = speedups(rows)
    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        up = ups.get(r.label)
        if up and r.mode != "serial":
            panels[f"{r.model} · {r.backend} {r.recipe}"][r.config.replace(f" b{r.batch}", "")].append((r.batch, up))
    if not panels or not available():
        return None
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.3 * nrows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, sorted(panels.items())):
        for label, pts in sorted(series.items(), key=lambda kv: MODE_ORDER.get(kv[0].split()[0], 9)):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed-up over serial")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("stations: cycle-time speed-up over serial (dashed: serial)", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / PLOT, dpi=100)
    plt.close(fig)
    return PLOT


def station_section(rows: list[AnyRow], report_dir: Path | None = None) -> list[str]:
    """The REPORT.md lines; with ``report_dir`` (and matplotlib) the plot is written beside it and shown."""
    measured = [r for r in rows if isinstance(r, StationRow) and r.measured]
    if not measured:
        return []
    out = ["## Stations", "",
           "Several models on every frame. *cycle ms*: mean time per frame for all the station's models (p99 "
           "beside it); *serial ms*: the serial mode's cycle at the same batch (the models in turn, one thread), "
           "which *speed-up* divides; *holds N fps*: p99 cycle within 1 / N s; *GPU MB*: NVML's peak during the "
           "window (+ its rise over the memory in use before the mode's runners were made; GPU columns appear "
           "where a GPU was used); *CPU %*: this process over all cores; *threads*: intra-op threads per runner "
           "on the CPU. **best**: the fastest stable mode of its batch. Modes: *serial* one thread, models in "
           "turn; *multistream* one thread, one stream per model, all in flight; *threadpool* one persistent "
           "thread per model, joined per frame; *merged* one engine built from the models composed into one "
           "graph, its outputs checked against the separate models' first.", ""]
    for station, rs in by_model(measured).items():
        first = rs[0]
        names = ", ".join(m.get("model", "?") for m in first.members)
        target = f"; must hold {first.fps_target:g} fps" if first.fps_target else ""
        out += [f"### {station}: {names} ({first.profile}{target})", "", station_table(rs), ""]
        notes = _notes(rs)
        if notes:
            out += [f"- {n}" for n in notes] + [""]
    if report_dir is not None:
        from ..plots import PLOTS

        name = write_plot(report_dir / PLOTS, measured)
        if name:
            out += [f"![stations: speed-up against batch]({PLOTS}/{name})", ""]
    return out

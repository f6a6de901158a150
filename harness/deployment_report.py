"""The REPORT.md sections of the deployment-condition gates, from typed rows:

* **Batch consistency and determinism** (:class:`SelfCheckRow`): per model, each case's comparisons, largest
  difference, bound and verdict, with the worst comparison in words;
* **Serving (open loop)** (:class:`ServerRow`): per model, every rate served (the throughput-latency curve,
  latency from arrival), and for latency-bounded searches the highest rate within the bound per configuration,
  the configuration that serves most marked **best**, with the search's statement of how sure it is; with
  matplotlib, ``plots/<model>-serving.png`` plots p99 latency against throughput per configuration, the bound
  drawn across.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .accuracy import fmt
from .perf_report import _rate, short
from .results import by_model
from .rows import AnyRow, SelfCheckRow, ServerRow

STATUS = {"pass": "pass", "fail": "**FAIL**", "error": "**ERROR**", "skipped": "skipped"}


def selfcheck_section(rows: list[AnyRow]) -> list[str]:
    checks = [r for r in rows if isinstance(r, SelfCheckRow)]
    if not checks:
        return []
    out = ["## Batch consistency and determinism", "",
           "The engine against itself. *consistency*: each sample's outputs at every position of batches of the "
           "profile's min, opt and max sizes (copies of one sample, and samples mixed) against its outputs alone; "
           "*determinism*: two builds of the recipe with the cache bypassed, a second runner and repeated runs "
           "against the first run. *max rel_l2* is the largest relative L2 difference over the comparisons.", ""]
    for model, mrows in by_model(checks).items():
        table = []
        for r in sorted(mrows, key=lambda r: (r.check, r.backend, r.recipe, r.profile)):
            builds = r.builds
            same = "–" if len(builds) < 2 else ("same bytes" if len({b.get("checksum") for b in builds}) == 1
                                                else "different bytes")
            table.append([r.check, r.backend, r.recipe, r.profile, ", ".join(map(str, r.batches)) or "–",
                          r.comparisons if r.comparisons is not None else "–", fmt(r.metrics.get("rel_l2.max")),
                          "; ".join(sorted({b.budget for b in r.budgets})) or "–", same,
                          r.worst[0]["where"] if r.worst else "–", STATUS.get(r.status, r.status)])
        out += [f"### {model}", "", tabulate(table, headers=["check", "backend", "recipe", "profile", "batches",
                                                             "compared", "max rel_l2", "bound", "engines",
                                                             "worst", "status"],
                                              tablefmt="github", disable_numparse=True), ""]
    return out


def _config(r: ServerRow) -> str:
    return (f"{r.recipe} {r.profile} b{r.batch} n{r.concurrency}" + ("" if r.resident else " +copy")
            + (" +graph" if r.cuda_graph else ""))


def _ms(v: Any) -> str:
    return "unfinished" if v is None else short(float(v))


def best_within_bound(rows: list[ServerRow]) -> dict[tuple[str, str, str], ServerRow]:
    """Per model, backend and bound: the search row serving the most samples per second within the bound."""
    best: dict[tuple[str, str, str], ServerRow] = {}
    for r in rows:
        if r.rate != "search" or not r.measured or r.throughput is None:
            continue
        key = (r.model, r.backend, r.bound)
        if key not in best or r.throughput > (best[key].throughput or 0.0):
            best[key] = r
    return best


def server_section(rows: list[AnyRow], report_dir: Path | None = None) -> list[str]:
    served = [r for r in rows if isinstance(r, ServerRow)]
    if not served:
        return []
    out = ["## Serving (open loop)", "",
           "Requests arrive by a Poisson process at the offered rate and queue for N runners; latency counts from "
           "each request's scheduled arrival (no coordinated omission). *capacity*: requests per second the same N "
           "runners complete closed-loop; *queue p99*: waiting before a runner took the request.", ""]
    best = best_within_bound(served)
    for model, mrows in by_model(served).items():
        out += [f"### {model}", ""]
        searches = [r for r in mrows if r.rate == "search"]
        if searches:
            table = []
            for r in sorted(searches, key=lambda r: -(r.throughput or 0.0)):
                mark = " **best**" if best.get((r.model, r.backend, r.bound)) is r else ""
                table.append([r.backend, _config(r) + mark, r.bound, _rate(r.capacity),
                              _rate(r.offered_rate) if r.offered_rate else "none", _rate(r.throughput),
                              *((_ms(r.latency_ms.get("p50")), _ms(r.latency_ms.get("p99"))) if r.offered_rate
                                else ("–", "–")), STATUS.get(r.status, r.status)])
            out += ["Highest rate within the bound, per configuration (the best serves most samples per second):", "",
                    tabulate(table, headers=["backend", "configuration", "bound", "capacity req/s",
                                             "rate within bound req/s", "samples/s", "p50 ms", "p99 ms", "status"],
                             tablefmt="github", disable_numparse=True), ""]
            out += [f"- {_config(r)} ({r.backend}): {r.search.get('statement', r.message or '')}" for r in searches]
            out.append("")
        table = []
        for r in sorted(mrows, key=lambda r: (r.backend, _config(r), r.rate)):
            for p in sorted(r.points, key=lambda p: p["rate"]):
                lat = p.get("latency_ms", {})
                load = f"{100 * p['rate'] / r.capacity:.0f} %" if r.capacity else "–"
                table.append([r.backend, _config(r), _rate(p["rate"]), load, _rate(p.get("throughput")),
                              _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(lat.get("max")),
                              _ms(p.get("queue_ms", {}).get("p99")), p.get("unfinished", 0)])
        out += ["Every rate served (the throughput-latency curve):", "",
                tabulate(table, headers=["backend", "configuration", "rate req/s", "of capacity", "samples/s",
                                         "p50 ms", "p90 ms", "p99 ms", "max ms", "queue p99 ms", "unfinished"],
                         tablefmt="github", disable_numparse=True), ""]
        plot = write_curve(report_dir, model, mrows) if report_dir is not None else None
        if plot:
            out += [f"![{model} serving]({plot})", ""]
    return out


def write_curve(report_dir: Path, model: str, rows: list[ServerRow]) -> str | None:
    """p99 latency against samples per second, one line per configuration (matplotlib; None without it)."""
    from .plots import PLOTS, _pyplot, available

    if not available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    bounds = set()
    for r in rows:
        for p in r.points:
            p99 = p.get("latency_ms", {}).get("p99")
            if p99 is not None and p.get("throughput"):
                lines[f"{r.backend} {_config(r)}"].append((float(p["throughput"]), float(p99)))
        if r.search.get("bound_ms"):
            bounds.add((r.bound, float(r.search["bound_ms"])))
    if not lines:
        plt.close(fig)
        return None
    for label, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    for text, ms in sorted(bounds):
        ax.axhline(ms, linestyle="--", color="grey")
        ax.annotate(text, (0, ms), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("samples / s served")
    ax.set_ylabel("p99 latency from arrival, ms")
    ax.set_title(f"{model}: open-loop serving")
    ax.legend(fontsize=7)
    fig.tight_layout()
    folder = report_dir / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{model}-serving.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return f"{PLOTS}/{name}"


def deployment_sections(rows: list[AnyRow], report_dir: Path | None = None) -> list[list[str]]:
    return [selfcheck_section(rows), server_section(rows, report_dir)]

"""REPORT.md across devices: when rows come from several GPUs or hosts, the same case side by side on each.

Rows know where they ran (``row.device``: host, and the GPU's NVML index, name and UUID, or the CPU's model).
When a report holds rows of more than one device (one worker per GPU, shards gathered from several hosts:
:mod:`harness.gather`), this section lists the devices and puts every case that ran on two or more of them
in one line: accuracy (p99 relative L2 error and verdict) and throughput and latency (samples/s, p50 and p99),
with the spread between the fastest and the slowest device. The other tables of the report get a *device*
column (:func:`labels` names devices shortly and uniquely).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from .accuracy import fmt
from .device_id import device_key, device_label
from .rows import AccuracyRow, AnyRow, PerfRow

STATUS = {"pass": "pass", "fail": "**FAIL**", "error": "**ERROR**", "unbudgeted": "no budget",
          "known failure": "fails (known)", "skipped": "skipped", "unstable": "unstable"}


def devices_of(rows: Sequence[AnyRow]) -> list[dict[str, Any]]:
    """The distinct devices, by host, kind (GPUs first) and index."""
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.device:
            found.setdefault(device_key(r.device), r.device)
    return sorted(found.values(), key=lambda d: (str(d.get("host")), d.get("kind") != "gpu", d.get("index", 0),
                                                  device_key(d)))


def labels(rows: Sequence[AnyRow]) -> dict[str, str]:
    """Device key -> a short label ("node1 gpu1"), made unique with the GPU's UUID where two would read alike."""
    devices = devices_of(rows)
    short = {device_key(d): device_label(d) for d in devices}
    counts: dict[str, int] = defaultdict(int)
    for text in short.values():
        counts[text] += 1
    for d in devices:
        k = device_key(d)
        if counts[short[k]] > 1:
            short[k] += f" {str(d.get('uuid') or d.get('name') or '')[:12]}".rstrip()
    return short


def several(rows: Sequence[AnyRow]) -> bool:
    return len(devices_of(rows)) > 1


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _rate(v: float | None) -> str:
    if not v:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def device_table(rows: Sequence[AnyRow], names: dict[str, str]) -> str:
    by_device: dict[str, list[AnyRow]] = defaultdict(list)
    for r in rows:
        by_device[device_key(r.device)].append(r)
    table = []
    for d in devices_of(rows):
        rs = by_device[device_key(d)]
        env = rs[-1].env
        util = [float(r.resources["gpu_util"]) for r in rs if isinstance(r, PerfRow) and
                r.resources.get("gpu_util") is not None]
        table.append([names[device_key(d)], d.get("host") or "–", d.get("name") or "–",
                      d.get("index", "–") if d.get("kind") == "gpu" else "–", str(d.get("uuid") or "–")[:20],
                      env.get("cpu_affinity", "–"), len(rs), len({r.run_id for r in rs}),
                      f"{sum(util) / len(util):.0f} %" if util else "–"])
    return tabulate(table, headers=["device", "host", "GPU / CPU", "index", "UUID", "CPUs", "rows", "runs",
                                    "GPU util (perf)"], tablefmt="github", disable_numparse=True)


def _side_by_side(rows: Sequence[AnyRow], names: dict[str, str]
                  ) -> tuple[list[dict[str, AnyRow]], list[str], int]:
    """Cases that ran on two or more devices ({device key: row} each), the devices they used, and how many ran
    on one only."""
    cases: dict[tuple[str, ...], dict[str, AnyRow]] = defaultdict(dict)
    for r in rows:
        cases[r.case_key()][device_key(r.device)] = r
    shared = [c for _, c in sorted(cases.items()) if len(c) > 1]
    used = [k for k in names if any(k in c for c in shared)]
    return shared, used, sum(1 for c in cases.values() if len(c) == 1)


def accuracy_table(rows: Sequence[AnyRow], names: dict[str, str]) -> tuple[str, int, int]:
    shared, used, alone = _side_by_side([r for r in rows if isinstance(r, AccuracyRow)], names)
    table = []
    for case in shared:
        first = next(iter(case.values()))
        cells = []
        for k in used:
            r = case.get(k)
            p99 = r.metrics.get("rel_l2.p99") if isinstance(r, AccuracyRow) else None
            cells.append("–" if r is None else f"{fmt(p99) if p99 is not None else '–'} {STATUS.get(r.status, r.status)}")
        verdicts = {r.status for r in case.values()}
        table.append([first.model, first.backend, first.recipe, first.profile, *cells,
                      "same" if len(verdicts) == 1 else "**differ**"])
    text = tabulate(table, headers=["model", "backend", "recipe", "profile",
                                    *(f"{names[k]}: rel_l2 p99" for k in used), "verdicts"],
                    tablefmt="github", disable_numparse=True) if table else ""
    return text, len(table), alone


def perf_table(rows: Sequence[AnyRow], names: dict[str, str]) -> tuple[str, int, int]:
    shared, used, alone = _side_by_side([r for r in rows if isinstance(r, PerfRow) and r.throughput], names)
    table = []
    for case in shared:
        first = next(iter(case.values()))
        assert isinstance(first, PerfRow)
        cells: list[str] = []
        rates = []
        for k in used:
            r = case.get(k)
            if not isinstance(r, PerfRow):
                cells += ["–", "–"]
                continue
            rates.append(r.throughput or 0.0)
            lat = r.latency_ms
            cells += [_rate(r.throughput) + ("" if r.stable is not False else " (unstable)"),
                      f"{_ms(lat.get('p50'))} / {_ms(lat.get('p99'))}" if lat else "–"]
        spread = f"{max(rates) / min(rates):.2f}x" if len(rates) > 1 and min(rates) > 0 else "–"
        table.append([first.model, first.backend, first.recipe, first.profile, first.config, *cells, spread])
    headers = ["model", "backend", "recipe", "profile", "configuration"]
    for k in used:
        headers += [f"{names[k]}: samples/s", f"{names[k]}: p50 / p99 ms"]
    text = tabulate(table, headers=[*headers, "fastest / slowest"], tablefmt="github",
                    disable_numparse=True) if table else ""
    return text, len(table), alone


def cross_device_section(rows: Sequence[AnyRow]) -> list[str]:
    if not several(rows):
        return []
    names = labels(rows)
    out = ["## Across devices", "",
           f"These results come from {len(names)} devices (host, and GPU by NVML index and UUID, or the CPU). Each "
           "case that ran on more than one is shown side by side; *fastest / slowest* is the spread of its "
           "throughput between them.", "", device_table(rows, names), ""]
    acc, n_acc, alone_acc = accuracy_table(rows, names)
    if acc:
        out += ["### Accuracy on each device", "", acc, ""]
    perf, n_perf, alone_perf = perf_table(rows, names)
    if perf:
        out += ["### Throughput and latency on each device", "", perf, ""]
    out += [f"{n_acc + n_perf} case(s) ran on more than one device; {alone_acc + alone_perf} on one only (shown in "
            "the tables above, with their device).", ""]
    return out

"""The perf sections of REPORT.md: a throughput table per model, and per model the best configuration found
with its speed-up over serial batch 1 (the "which scheme wins" table), from typed :class:`PerfRow` rows."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

from .device_id import device_key
from .device_report import labels, several
from .results import by_model
from .rows import AnyRow, PerfRow

MODE_ORDER = {"serial": 0, "multistream": 1, "threadpool": 2}
KIND_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}


def short(v: Any, digits: int = 3) -> str:
    """A number in a table cell: 3 significant digits for floats, – for none."""
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _order(r: PerfRow) -> tuple[Any, ...]:
    return (r.backend, KIND_ORDER.get(str(r.recipe_kind), 9), r.recipe, r.profile, MODE_ORDER.get(r.mode, 9),
            r.batch, r.concurrency, not r.resident, r.cuda_graph)


def perf_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> str:
    """One model's perf rows; ``names`` (device key -> label) adds a device column (rows of several devices)."""
    table = []
    for r in sorted(rows, key=_order):
        res, lat = r.resources, r.latency_ms
        mode = r.mode + ("" if r.resident else " +copy") + (" +graph" if r.cuda_graph else "")
        table.append([
            *([names[device_key(r.device)]] if names else []),
            r.backend, r.recipe, r.profile, mode, r.batch, r.concurrency if r.mode != "serial" else 1,
            r.threads_per_runner or "–", _rate(r.throughput), short(lat.get("p50")), short(lat.get("p99")), short(r.cv, 2),
            short(res.get("cpu_util"), 3), short(res.get("gpu_util"), 3),
            short(round(res["gpu_mem_peak_mb"])) if res.get("gpu_mem_peak_mb") else "–",
            "yes" if r.stable else "**no**",
        ])
    return tabulate(table, headers=[*(["device"] if names else []), "backend", "recipe", "profile", "mode", "batch",
                                    "N", "threads", "samples/s",
                                    "p50 ms", "p99 ms", "CV", "CPU %", "GPU util %", "GPU MB", "stable"],
                    tablefmt="github", disable_numparse=True)


def _rate_of(r: PerfRow) -> float:
    return r.throughput or 0.0


def best_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Per model, backend and recipe (and device, with ``names``): serial batch 1, the best configuration, and
    the speed-up."""
    groups: dict[tuple[str, str, str], list[PerfRow]] = defaultdict(list)
    for r in rows:
        if r.throughput:
            # on several devices each is its own group: a device's best against its own serial batch 1
            backend = r.backend + (f" @ {names[device_key(r.device)]}" if names else "")
            groups[(r.model, backend, r.recipe)].append(r)
    table, notes = [], []

    def group_order(kv: tuple[tuple[str, str, str], list[PerfRow]]) -> tuple[Any, ...]:
        (model, backend, recipe), rs = kv
        return model, backend, KIND_ORDER.get(str(rs[0].recipe_kind), 9), recipe

    for (model, backend, recipe), rs in sorted(groups.items(), key=group_order):
        base = max((r for r in rs if r.mode == "serial" and r.batch == 1 and r.resident and not r.cuda_graph),
                   key=_rate_of, default=None)
        best = max(rs, key=_rate_of)
        speedup = _rate_of(best) / _rate_of(base) if base else None
        table.append([model, backend, recipe, _rate(base.throughput) if base else "–",
                      f"{best.config} ({best.profile})", _rate(best.throughput),
                      f"{speedup:.2f}x" if speedup else "–"])
        # small batch: does running requests concurrently beat serial at batch 1?
        if base:
            conc = [r for r in rs if r.batch == 1 and r.mode != "serial"]
            if conc:
                top = max(conc, key=_rate_of)
                ratio = _rate_of(top) / _rate_of(base)
                if ratio <= 1.0:
                    notes.append(
                        f"{model} / {backend} / {recipe}: at batch 1, {top.mode} n{top.concurrency} gives "
                        f"{_rate(top.throughput)} samples/s against serial's {_rate(base.throughput)} "
                        f"({ratio:.2f}x): serial p50 is {short(base.latency_ms.get('p50'))} ms, so per-request "
                        "overhead, not compute, bounds it")
    text = tabulate(table, headers=["model", "backend", "recipe", "serial b1 samples/s", "best configuration",
                                    "samples/s", "speed-up"], tablefmt="github", disable_numparse=True)
    return text, notes


def graph_table(rows: list[PerfRow]) -> str:
    """CUDA graphs against the same configuration without them."""
    def config(r: PerfRow) -> tuple[Any, ...]:
        return r.model, r.backend, r.recipe, r.profile, r.mode, r.batch, r.concurrency, r.resident

    plain = {config(r): r for r in rows if not r.cuda_graph}
    table = []
    for r in sorted((r for r in rows if r.cuda_graph), key=lambda r: (r.model, _order(r))):
        base = plain.get(config(r))
        if base is None:
            continue
        mode = r.mode + (f" n{r.concurrency}" if r.mode != "serial" else "")
        gpu = (r.gpu_ms or {}).get("p50"), (base.gpu_ms or {}).get("p50")
        table.append([r.model, r.backend, r.recipe, r.profile, mode, r.batch, _rate(base.throughput),
                      _rate(r.throughput), f"{_rate_of(r) / _rate_of(base):.2f}x", short(base.latency_ms.get("p50")),
                      short(r.latency_ms.get("p50")), short(gpu[1]), short(gpu[0])])
    if not table:
        return ""
    return tabulate(table, headers=["model", "backend", "recipe", "profile", "mode", "batch", "samples/s",
                                    "with graphs", "speed-up", "p50 ms", "with graphs", "GPU p50 ms",
                                    "with graphs"], tablefmt="github", disable_numparse=True)


def perf_sections(rows: list[AnyRow]) -> list[list[str]]:
    perf = [r for r in rows if isinstance(r, PerfRow) and r.throughput]
    if not perf:
        return []
    out = ["## Throughput and latency", "",
           "Samples per second over the measurement window (after a discarded warm-up); latency per request. "
           "*N*: requests in flight (multistream) or host threads (threadpool); *threads*: intra-op threads per "
           "runner on the CPU; *CPU %*: this process over all cores; *+copy*: inputs copied to the device every "
           "iteration; *+graph*: CUDA graphs. A run is unstable when its latency CV or its windowed throughput "
           "drift exceeds the bound.", ""]
    names = labels(perf) if several(perf) else None
    for model, rs in by_model(perf).items():
        out += [f"### {model}", "", perf_table(rs, names), ""]
    text, notes = best_table(perf, names)
    out += ["## Which configuration wins", "",
            "Per model, backend and recipe: the fastest configuration measured, against serial batch 1.", "",
            text, ""]
    if notes:
        out += ["Where running requests concurrently did not beat serial at batch 1:", ""]
        out += [f"- {n}" for n in notes]
        out.append("")
    graphs = graph_table(perf)
    if graphs:
        out += ["## CUDA graphs", "", "Each configuration with CUDA graphs against the same one without; *GPU p50* "
                "is the device time per request from CUDA events.", "", graphs, ""]
    return [out]

"""The perf sections of REPORT.md: a throughput table per model, and per model the best configuration found
with its speed-up over serial batch 1 (the "which scheme wins" table)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

from .results import by_model

MODE_ORDER = {"serial": 0, "multistream": 1, "threadpool": 2}
KIND_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _rate(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _order(r: dict[str, Any]) -> tuple[Any, ...]:
    return (str(r.get("backend")), KIND_ORDER.get(str(r.get("recipe_kind")), 9), str(r.get("recipe")),
            str(r.get("profile")), MODE_ORDER.get(str(r.get("mode")), 9), int(r.get("batch") or 0),
            int(r.get("concurrency") or 0), not r.get("resident", True), bool(r.get("cuda_graph")))


def perf_table(rows: list[dict[str, Any]]) -> str:
    table = []
    for r in sorted(rows, key=_order):
        res = r.get("resources") or {}
        lat = r.get("latency_ms") or {}
        mode = r.get("mode", "")
        if not r.get("resident", True):
            mode += " +copy"
        if r.get("cuda_graph"):
            mode += " +graph"
        table.append([
            r.get("backend"), r.get("recipe"), r.get("profile"), mode, r.get("batch"),
            r.get("concurrency") if r.get("mode") != "serial" else 1, r.get("threads_per_runner") or "–",
            _rate(r.get("throughput")), _f(lat.get("p50")), _f(lat.get("p99")), _f(r.get("cv"), 2),
            _f(res.get("cpu_util"), 3), _f(res.get("gpu_util"), 3),
            _f(round(res["gpu_mem_peak_mb"])) if res.get("gpu_mem_peak_mb") else "–",
            "yes" if r.get("stable") else "**no**",
        ])
    return tabulate(table, headers=["backend", "recipe", "profile", "mode", "batch", "N", "threads", "samples/s",
                                    "p50 ms", "p99 ms", "CV", "CPU %", "GPU util %", "GPU MB", "stable"],
                    tablefmt="github", disable_numparse=True)


def best_table(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Per model, backend and recipe: serial batch 1, the best configuration, and the speed-up."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("throughput"):
            groups[(r["model"], r["backend"], r["recipe"])].append(r)
    table, notes = [], []
    def group_order(kv: tuple[tuple[str, str, str], list[dict[str, Any]]]) -> tuple[Any, ...]:
        (model, backend, recipe), rs = kv
        return model, backend, KIND_ORDER.get(str(rs[0].get("recipe_kind")), 9), recipe

    for (model, backend, recipe), rs in sorted(groups.items(), key=group_order):
        base = max((r for r in rs if r.get("mode") == "serial" and r.get("batch") == 1 and r.get("resident", True)
                    and not r.get("cuda_graph")), key=lambda r: r["throughput"], default=None)
        best = max(rs, key=lambda r: r["throughput"])
        config = f"{best['mode']} b{best['batch']}" + (f" n{best['concurrency']}" if best["mode"] != "serial" else "") \
            + (" +graph" if best.get("cuda_graph") else "") + ("" if best.get("resident", True) else " +copy") \
            + f" ({best['profile']})"
        speedup = best["throughput"] / base["throughput"] if base else None
        table.append([model, backend, recipe, _rate(base["throughput"]) if base else "–", config,
                      _rate(best["throughput"]), f"{speedup:.2f}x" if speedup else "–"])
        # small batch: does running requests concurrently beat serial at batch 1?
        if base:
            conc = [r for r in rs if r.get("batch") == 1 and r.get("mode") != "serial"]
            if conc:
                top = max(conc, key=lambda r: r["throughput"])
                ratio = top["throughput"] / base["throughput"]
                if ratio <= 1.0:
                    notes.append(
                        f"{model} / {backend} / {recipe}: at batch 1, {top['mode']} n{top['concurrency']} gives "
                        f"{_rate(top['throughput'])} samples/s against serial's {_rate(base['throughput'])} "
                        f"({ratio:.2f}x): serial p50 is {_f(base['latency_ms']['p50'])} ms, so per-request "
                        "overhead, not compute, bounds it")
    text = tabulate(table, headers=["model", "backend", "recipe", "serial b1 samples/s", "best configuration",
                                    "samples/s", "speed-up"], tablefmt="github", disable_numparse=True)
    return text, notes


def graph_table(rows: list[dict[str, Any]]) -> str:
    """CUDA graphs against the same configuration without them."""
    plain = {(r["model"], r["backend"], r["recipe"], r["profile"], r["mode"], r["batch"], r.get("concurrency"),
              r.get("resident")): r for r in rows if not r.get("cuda_graph")}
    table = []
    for r in sorted((r for r in rows if r.get("cuda_graph")), key=lambda r: (r["model"], _order(r))):
        base = plain.get((r["model"], r["backend"], r["recipe"], r["profile"], r["mode"], r["batch"],
                          r.get("concurrency"), r.get("resident")))
        if base is None:
            continue
        mode = r["mode"] + (f" n{r['concurrency']}" if r["mode"] != "serial" else "")
        gpu = (r.get("gpu_ms") or {}).get("p50"), (base.get("gpu_ms") or {}).get("p50")
        table.append([r["model"], r["backend"], r["recipe"], r["profile"], mode, r["batch"],
                      _rate(base["throughput"]), _rate(r["throughput"]), f"{r['throughput'] / base['throughput']:.2f}x",
                      _f(base["latency_ms"]["p50"]), _f(r["latency_ms"]["p50"]), _f(gpu[1]), _f(gpu[0])])
    if not table:
        return ""
    return tabulate(table, headers=["model", "backend", "recipe", "profile", "mode", "batch", "samples/s",
                                    "with graphs", "speed-up", "p50 ms", "with graphs", "GPU p50 ms",
                                    "with graphs"], tablefmt="github", disable_numparse=True)


def perf_sections(rows: list[dict[str, Any]]) -> list[list[str]]:
    perf = [r for r in rows if r.get("type") == "perf" and r.get("throughput")]
    if not perf:
        return []
    out = ["## Throughput and latency", "",
           "Samples per second over the measurement window (after a discarded warm-up); latency per request. "
           "*N*: requests in flight (multistream) or host threads (threadpool); *threads*: intra-op threads per "
           "runner on the CPU; *CPU %*: this process over all cores; *+copy*: inputs copied to the device every "
           "iteration; *+graph*: CUDA graphs. A run is unstable when its latency CV or its windowed throughput "
           "drift exceeds the bound.", ""]
    for model, rs in by_model(perf).items():
        out += [f"### {model}", "", perf_table(rs), ""]
    text, notes = best_table(perf)
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

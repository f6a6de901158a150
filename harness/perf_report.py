"""The perf sections of REPORT.md: a throughput table per model (and for GPU rows trtexec's breakdown and the
GPU's state), and per model the best configuration found with its speed-up over serial batch 1 (the "which
scheme wins" table), from typed :class:`PerfRow` rows.

Only a *quotable* row can win: stable (robust CV and drift within bounds) and measured on a machine in a
state to quote it (no GPU throttling, host not overloaded: ``state_flags``). A group with none says so. The
CV shown is the robust one, the one that decides stability."""

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


def _mode(r: PerfRow) -> str:
    return (r.mode + ("" if r.resident else " +copy") + (" +graph" if r.cuda_graph else "")
            + (f" +{r.sync}" if r.sync and r.sync != "spin" else ""))


def _stable(r: PerfRow) -> str:
    if r.stable is False or r.status == "unstable":
        return "**no**"
    return "yes (drift unchecked)" if r.stability_notes else "yes"


def _state(r: PerfRow) -> str:
    """"ok", or what keeps the row from being quoted, in a word or two."""
    words = [("**throttled**" if f.startswith("GPU throttled") else "**host overloaded**" if
              f.startswith("host overloaded") else "**flagged**") for f in r.state_flags]
    return ", ".join(dict.fromkeys(words)) or ("ok" if r.state else "–")


def _device(r: PerfRow, names: dict[str, str] | None) -> list[str]:
    """The device column's cell, where rows of several devices share a table."""
    return [names[device_key(r.device)]] if names else []


def _threads(r: PerfRow) -> Any:
    # serial on ort_cpu leaves the pool to ONNX Runtime: its default, a pinned thread per physical core
    return r.threads_per_runner or ("default" if r.runner.get("physical_cores") else "–")


def perf_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> str:
    """One model's perf rows; ``names`` (device key -> label) adds a device column (rows of several devices)."""
    table = []
    for r in sorted(rows, key=_order):
        res, lat = r.resources, r.latency_ms
        table.append([
            *_device(r, names), r.backend, r.recipe, r.profile, _mode(r), r.batch,
            r.concurrency if r.mode != "serial" else 1, _threads(r), _rate(r.throughput), short(lat.get("p50")),
            short(lat.get("p99")), short(r.cv_robust, 2), short(res.get("cpu_util"), 3), short(res.get("gpu_util"), 3),
            short(round(res["gpu_mem_peak_mb"])) if res.get("gpu_mem_peak_mb") else "–",
            short(r.state.get("host_other_load_per_cpu"), 2), _stable(r), _state(r),
        ])
    return tabulate(table, headers=[*(["device"] if names else []), "backend", "recipe", "profile", "mode", "batch",
                                    "N", "threads", "samples/s", "p50 ms", "p99 ms", "CV (robust)", "CPU %",
                                    "GPU util %", "GPU MB", "other load / CPU", "stable", "machine"],
                    tablefmt="github", disable_numparse=True)


def breakdown_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> str:
    """GPU rows: trtexec's breakdown (p50 per part) and the throughputs with and without transfers."""
    table = []
    for r in sorted((r for r in rows if r.breakdown_ms), key=_order):
        b = r.breakdown_ms or {}
        part = {k: (b.get(k) or {}).get("p50") for k in ("h2d", "compute", "d2h", "enqueue", "latency")}
        table.append([*_device(r, names), r.backend, r.recipe, r.profile, _mode(r), r.batch,
                      r.concurrency if r.mode != "serial" else 1, _rate(r.throughput), _rate(r.throughput_compute),
                      _rate(r.throughput_transfers),
                      short(part["h2d"]), short(part["compute"]), short(part["d2h"]), short(part["latency"]),
                      short(part["enqueue"]), "yes" if r.transfers_included else "no"])
    if not table:
        return ""
    return tabulate(table, headers=[*(["device"] if names else []), "backend", "recipe", "profile", "mode",
                                    "batch", "N", "samples/s", "compute only", "with transfers", "H2D ms",
                                    "compute ms", "D2H ms", "latency ms", "enqueue ms", "copies timed"],
                    tablefmt="github", disable_numparse=True)


def gpu_state_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> str:
    """GPU rows: clocks, power, temperature, clock event reasons and other processes during the run."""
    table = []
    for r in sorted((r for r in rows if "gpu_samples" in r.state), key=_order):
        st = r.state
        reasons = ", ".join(f"{k} {100 * v:.0f} %" for k, v in (st.get("gpu_reasons") or {}).items()) or "none"
        others = st.get("gpu_other_processes") or []
        power = (f"{st['gpu_power_w']:.0f}" if st.get("gpu_power_w") is not None else "–") + \
            (f" / {st['gpu_power_limit_w']:.0f}" if st.get("gpu_power_limit_w") else "")
        sm = f"{short(st.get('gpu_sm_mhz'), 4)} (min {short(st.get('gpu_sm_mhz_min'), 4)})"
        table.append([*_device(r, names), r.backend, r.recipe, _mode(r), r.batch,
                      r.concurrency if r.mode != "serial" else 1, sm,
                      short(st.get("gpu_mem_mhz"), 4), power, short(st.get("gpu_temp_c_max"), 3), reasons,
                      len(others), _state(r)])
    if not table:
        return ""
    return tabulate(table, headers=[*(["device"] if names else []), "backend", "recipe", "mode", "batch", "N",
                                    "SM MHz", "memory MHz",
                                    "power W / limit", "max °C", "clock event reasons (share of samples)",
                                    "other GPU processes", "machine"], tablefmt="github", disable_numparse=True)


def _rate_of(r: PerfRow) -> float:
    return r.throughput or 0.0


def _left_out(rs: list[PerfRow]) -> str:
    """Why rows could not compete, counted: "3 unstable, 1 host overloaded"."""
    counts: dict[str, int] = {}
    for r in rs:
        if r.stable is False or r.status == "unstable":
            why = "unstable"
        elif r.state_flags:
            why = "throttled" if r.state_flags[0].startswith("GPU throttled") else "host overloaded"
        else:
            continue
        counts[why] = counts.get(why, 0) + 1
    return ", ".join(f"{n} {why}" for why, n in counts.items())


def best_table(rows: list[PerfRow], names: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Per model, backend and recipe (and device, with ``names``): serial batch 1, the best configuration, and
    the speed-up; only quotable rows (stable, machine not flagged) compete, and a group without one says so."""
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

    for (model, backend, recipe), measured in sorted(groups.items(), key=group_order):
        rs = [r for r in measured if r.quotable]
        left_out = _left_out(measured)
        if not rs:
            table.append([model, backend, recipe, "–", f"none: no quotable row of {len(measured)}", "–", "–",
                          left_out])
            continue
        base = max((r for r in rs if r.mode == "serial" and r.batch == 1 and r.resident and not r.cuda_graph),
                   key=_rate_of, default=None)
        best = max(rs, key=_rate_of)
        speedup = _rate_of(best) / _rate_of(base) if base else None
        table.append([model, backend, recipe, _rate(base.throughput) if base else "–",
                      f"{best.config} ({best.profile})", _rate(best.throughput),
                      f"{speedup:.2f}x" if speedup else "–", left_out or "–"])
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
                                    "samples/s", "speed-up", "left out"], tablefmt="github", disable_numparse=True)
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
           "iteration; *+graph*: CUDA graphs; *+block*: the host sleeps on a blocking-sync event instead of "
           "spinning. A run is unstable when its robust latency CV (1.4826 x MAD / median, the one shown) or its "
           "windowed throughput drift exceeds the bound; *drift unchecked*: too few iterations for the drift check "
           "(a slow model stopped by the minimum-iteration rule). *Other load / CPU*: other processes' runnable "
           "threads per CPU during the run; *machine*: **throttled** (GPU clock event reasons: power cap, thermal, "
           "hardware slowdown) or **host overloaded** (other load per CPU above `--perf-max-load`) rows are "
           "not quotable.", ""]
    names = labels(perf) if several(perf) else None
    for model, rs in by_model(perf).items():
        out += [f"### {model}", "", perf_table(rs, names), ""]
        breakdown = breakdown_table(rs, names)
        if breakdown:
            out += ["trtexec's breakdown (p50 per request, one at a time, in a pass after the window, copies always "
                    "timed): *compute only* = batch / compute time, *with transfers* = batch / (H2D + compute + "
                    "D2H); *enqueue*: host time to queue the compute; *copies timed*: whether the row's own "
                    "samples/s includes them.", "", breakdown, ""]
        state = gpu_state_table(rs, names)
        if state:
            out += ["The GPU during the run (NVML, sampled every 0.1 s):", "", state, ""]
    text, notes = best_table(perf, names)
    out += ["## Which configuration wins", "",
            "Per model, backend and recipe: the fastest quotable configuration (stable, machine not flagged), "
            "against serial batch 1; *left out*: rows that could not compete.", "", text, ""]
    if notes:
        out += ["Where running requests concurrently did not beat serial at batch 1:", ""]
        out += [f"- {n}" for n in notes]
        out.append("")
    graphs = graph_table(perf)
    if graphs:
        out += ["## CUDA graphs", "", "Each configuration with CUDA graphs against the same one without; *GPU p50* "
                "is the device time per request from CUDA events.", "", graphs, ""]
    return [out]

"""Result rows: one typed, versioned schema that the checks fill and every reader validates.

A row is one test's outcome (or one doctor's diagnosis), one JSON object per line in
``rows/<run>/<worker>.jsonl`` and one element of ``results.json``'s ``rows``. Five types, one dataclass each:

``accuracy``  :class:`AccuracyRow`  a case's error statistics against the FP32 reference, its budgets, verdict
``perf``      :class:`PerfRow`      a timed configuration: throughput, latency percentiles, a latency histogram
``build``     :class:`BuildRow`     an engine built (or found in the cache), nothing run
``station``   :class:`StationRow`   a station (several models per frame) timed in one mode: cycle time per frame
``doctor``    :class:`DoctorRow`    the precision doctor on a failing case: where the error starts, the fix found
``selfcheck`` :class:`SelfCheckRow` an engine against itself: batch consistency or determinism (schema 5)
``server``    :class:`ServerRow`    open-loop serving at an offered rate, or the highest rate within a latency bound

Every row carries its case (model, backend, recipe, profile, and for perf the mode, batch, N...), the
``device`` it ran on (host, and the GPU's index, name and UUID or the CPU's model: :mod:`harness.device_id`), its
``status``, where it was made (``run_id``, ``worker``, ``time``) and the machine (``env``, see
:data:`ENV_FIELDS`). A row's key is its case and its device, so that rows of one case from two GPUs or two
hosts never replace each other (:meth:`Row.key`; :meth:`Row.case_key` leaves the device out). On disk a row
is flat JSON with ``"schema": SCHEMA_VERSION``.

Reading (:func:`parse_row`) is strict about what identifies a row and about the type of every declared
field, and lenient about the rest: a key this version does not declare is kept in ``extra`` and written
back unchanged, so rows from a newer harness (or fields added on another branch) survive a merge.
Errors name the file and line. Versions: rows written before the schema existed have no ``schema`` key
and are version 1; version 2 rows have no ``device``; version 4 added the ``doctor`` type (no row of another
type changed, but a version 3 reader must refuse a doctor row as newer, not as an unknown type). Version 4
rows have no accuracy ``shape`` (they ran at the profile's opt shape, the default), no ``selfcheck`` or
``server`` types, perf rows no ``load_check``, no ``sync`` (part of a perf row's case since version 5: a GPU
row timed with the host sleeping on a blocking-sync event is another case than one timed spinning; no sync
reads as spin, what every older row measured) and no machine state (``state``, ``state_flags``: an older
row's machine is unknown, not flagged); :func:`migrate` brings older rows to the current version.

Nested statistics stay mappings: ``metrics`` {"rel_l2.p99": ...}, ``latency_ms`` {"p50": ...}.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .device_id import device_key, device_of

SCHEMA_VERSION = 5
log = logging.getLogger(__name__)

# the machine's facts every row carries under "env" (flat; plus "pkg.<name>": version per package).
# Declared keys are type-checked when read; others are kept as they are.
ENV_FIELDS: dict[str, type | tuple[type, ...]] = {
    "host": str, "os": str, "python": str, "cpu": str, "cores": int, "memory_gb": (int, float),
    "gpu": str, "gpu_cc": str, "driver": str, "cuda_driver": str, "gpu_count": int, "cuda_runtime": (str, int),
    "cudnn": str, "cpu_features": list, "cpu_int8_kernels": str,
    # the GPU this process runs on (CUDA device 0 here: the first of CUDA_VISIBLE_DEVICES), as NVML numbers it
    "gpu_index": int, "gpu_uuid": str,
    # the CPUs this process may run on ("0-15,32-47"), and why, where the harness pinned them (harness.devices)
    "cpu_affinity": str, "cpu_affinity_from": str,
}
# the backends that ran on a GPU when rows had no device field (schema < 3): frozen, it describes old rows
_GPU_BACKENDS_BEFORE_V3 = ("ort_cuda", "tensorrt", "tensorrt_rtx")


class RowError(ValueError):
    """A row that does not fit the schema; the message names the file and line (or index) and the field."""


@dataclass(frozen=True)
class Number:
    """One key number of a row (for JUnit properties, history and trends); ``better`` is its good direction."""

    name: str
    value: float
    better: str | None  # "lower", "higher" or None (shown, never judged)


@dataclass(kw_only=True)
class BudgetValue:
    """One budget evaluated on one output: ``budget`` is its label ("p99(rel_l2) <= 1%"), ``statistic``
    the part before the comparison ("p99(rel_l2)"), which compare and history match across runs."""

    budget: str
    output: str | None = None
    value: float | None = None
    passed: bool = False
    statistic: str = ""
    op: str = ""
    bound: float | None = None
    fp32: float | None = None  # an "of fp32" budget: the FP32 reference's own value (the bound is a fraction of it)

    @property
    def better(self) -> str | None:
        return "lower" if self.op.startswith("<") else "higher" if self.op.startswith(">") else None


_LABEL = re.compile(r"^\s*(?P<stat>.*?\))\s*(?P<op><=|>=|<|>)\s*(?P<bound>[-+0-9.eE]+%?)\s*(?:of\s+fp32)?\s*$")


def split_budget_label(label: str) -> tuple[str, str, float | None]:
    """"p99(rel_l2) <= 1%" -> ("p99(rel_l2)", "<=", 0.01); a label it cannot read -> (label, "", None)."""
    m = _LABEL.match(label)
    if not m:
        return label.strip(), "", None
    text = m.group("bound")
    try:
        bound = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        bound = None
    return m.group("stat"), m.group("op"), bound


@dataclass(kw_only=True)
class Row:
    """What every row has. Subclasses add their type's fields; ``KEY`` names the fields that identify a case;
    the row's key is the case and its ``device`` (a newer row with the same key replaces an older one in
    results.json; the same case on another device is another row)."""

    TYPE: ClassVar[str] = ""
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile")

    model: str
    backend: str
    recipe: str
    profile: str
    id: str = ""
    status: str = ""
    message: str | None = None
    recipe_kind: str | None = None
    backend_version: str | None = None
    run_id: str = ""
    worker: str = ""
    time: str = ""
    device: dict[str, Any] = field(default_factory=dict)  # where it ran: device_of(env, on_gpu)
    env: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not declare, kept as read

    def case_key(self) -> tuple[str, ...]:
        """The case, whatever device it ran on: type and the ``KEY`` fields."""
        return (self.TYPE, *(str(getattr(self, k)) for k in self.KEY))

    def key(self) -> tuple[str, ...]:
        """The case on its device: what identifies a row in results.json."""
        return (*self.case_key(), device_key(self.device))

    @property
    def label(self) -> str:
        return self.id or "-".join(str(getattr(self, k)) for k in self.KEY)

    def update(self, fields: dict[str, Any] | None = None, **more: Any) -> None:
        """Set fields by name; a name this version does not declare goes to ``extra`` (kept, written back)."""
        declared = _fields(type(self))
        for name, value in {**(fields or {}), **more}.items():
            if name in declared and name != "extra":
                setattr(self, name, value)
            else:
                self.extra[name] = value

    def numbers(self) -> list[Number]:
        """The row's key numbers: JUnit properties, history series, trend plots."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON: schema version, type, declared fields that are set, then the extra keys."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "type": self.TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or isinstance(value, (str, dict, list)) and not value:
                continue
            if f.name == "budgets":
                value = [{k: v for k, v in dataclasses.asdict(b).items() if v is not None} for b in value]
            out[f.name] = value
        out.update(self.extra)
        return out


@dataclass(kw_only=True)
class AccuracyRow(Row):
    TYPE: ClassVar[str] = "accuracy"
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile", "shape")

    batch: int | None = None
    samples: int | None = None
    data: str | None = None  # "real" or "generated" samples
    profile_shapes: str | None = None
    recipe_params: dict[str, Any] = field(default_factory=dict)
    recipe_info: dict[str, Any] = field(default_factory=dict)
    recipe_seconds: float | None = None
    recipe_hit: bool | None = None
    build_seconds: float | None = None
    engine_size: int | None = None
    cache_hit: bool | None = None
    engine_key: str | None = None
    setup: dict[str, Any] = field(default_factory=dict)  # how the engine is set up (ONNX Runtime: its session setup)
    setup_seconds: float | None = None
    seconds: float | None = None
    runner: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)  # "rel_l2.p99": worst output's value
    outputs: dict[str, Any] = field(default_factory=dict)  # per output: statistics, NaN/Inf counts, worst samples
    budgets: list[BudgetValue] = field(default_factory=list)
    nonfinite_samples: int = 0
    known_failure: str | None = None
    expectation_scopes: list[str] = field(default_factory=list)  # the registry's [[where]] blocks that applied
    # int8 recipes: the artifact as its ONNX defines it (Q/DQ run in float) against FP32, and the backend
    # against that; kernel_dominated when the second is the larger (harness.checks.kernels_dominate)
    simulated: dict[str, float | None] = field(default_factory=dict)
    kernel_error: dict[str, float | None] = field(default_factory=dict)
    kernel_dominated: bool | None = None
    notes: list[str] = field(default_factory=list)
    # where the budgets came from: "built-in defaults", "registry defaults", "model", "where ..." or "none"
    budget_source: str | None = None
    unbudgeted: bool | None = None  # no budget applied (status "unbudgeted", or "fail" with --strict-budgets)
    no_op: str | None = None  # why the recipe changed nothing (status "no-op")
    # the outputs' batch axes and real shapes by batch size, from one run of the FP32 model (harness.layout)
    output_layout: dict[str, Any] = field(default_factory=dict)
    fp32_label_metrics: dict[str, float | None] = field(default_factory=dict)  # FP32's scores against labels
    # schema 5: the profile's point the case ran at (min, opt, max or an extra shape: harness.shape_cases), part
    # of the key (a row without it ran at opt), and the inputs' shapes there
    shape: str = "opt"
    shape_dims: str | None = None

    @property
    def label(self) -> str:
        # as the case's id: nothing added at the opt shape
        return self.id or "-".join([self.model, self.backend, self.recipe, self.profile]
                                   + ([self.shape] if self.shape != "opt" else []))

    def numbers(self) -> list[Number]:
        out: list[Number] = []
        many = len({b.output for b in self.budgets}) > 1
        for b in self.budgets:
            if b.value is not None:
                out.append(Number(b.statistic + (f"[{b.output}]" if many and b.output else ""), b.value, b.better))
        worst = self.metrics.get("rel_l2.p99")
        if worst is not None and not any(n.name == "p99(rel_l2)" for n in out):
            out.append(Number("rel_l2.p99", worst, "lower"))  # the usual question, budgeted or not
        return out


@dataclass(kw_only=True)
class PerfRow(Row):
    TYPE: ClassVar[str] = "perf"
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile", "mode", "batch", "concurrency",
                                      "resident", "cuda_graph")

    mode: str
    batch: int
    concurrency: int = 1
    resident: bool = True
    cuda_graph: bool = False
    sync: str | None = None  # GPU backends: how the host waits, "spin" or "block" (None on the CPU)
    threads_per_runner: int | None = None
    transfers_included: bool | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    engine_key: str | None = None
    cache_hit: bool | None = None
    setup: dict[str, Any] = field(default_factory=dict)  # how the engine is set up (ONNX Runtime: its session setup)
    throughput: float | None = None  # samples / s over the window's timed seconds (wall_s - checked_s)
    iterations: int | None = None
    wall_s: float | None = None  # the measurement window
    checked_s: float | None = None  # of it, what the load check's requests took from the mode (weighted by share)
    warmup_iters: int | None = None
    warmup_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # mean, min, p50, p90, p95, p99, max, std
    latency_hist: dict[str, Any] | None = None  # harness.histogram.LogHistogram.to_dict(), seconds
    cv: float | None = None
    cv_robust: float | None = None
    window_throughputs: list[float] = field(default_factory=list)
    drift: float | None = None
    stable: bool | None = None
    unstable_reasons: list[str] = field(default_factory=list)
    stability_notes: list[str] = field(default_factory=list)  # what the verdict could not check (drift)
    gpu_ms: dict[str, float] | None = None  # device compute time per request (mean, p50, p99), from events
    breakdown_ms: dict[str, Any] | None = None  # trtexec's breakdown by part, ms (harness.breakdown)
    throughput_compute: float | None = None  # samples / s from the compute time alone (transfers excluded)
    throughput_transfers: float | None = None  # samples / s one request at a time with both copies
    runner: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    # schema 5: accuracy under load: requests checked during the measurement (harness.load_check)
    load_check: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # the machine during the run (harness.machine_state)
    state_flags: list[str] = field(default_factory=list)  # why not to quote it: GPU throttled, host overloaded

    def case_key(self) -> tuple[str, ...]:
        # a row without a sync (the CPU's, or written before schema 5) is the default case, spin
        return (*super().case_key(), self.sync or "spin")

    @property
    def measured(self) -> bool:
        return bool(self.throughput) and self.status in ("pass", "unstable")

    @property
    def quotable(self) -> bool:
        """Measured, stable, and on a machine in a state to quote it (not throttled, host not overloaded)."""
        return self.measured and self.stable is not False and self.status != "unstable" and not self.state_flags

    @property
    def config(self) -> str:
        """"multistream b8 n2 +graph": the configuration in a few words."""
        return (f"{self.mode} b{self.batch}" + (f" n{self.concurrency}" if self.mode != "serial" else "")
                + (" +graph" if self.cuda_graph else "") + ("" if self.resident else " +copy"))

    def numbers(self) -> list[Number]:
        out = [Number("throughput", self.throughput, "higher")] if self.throughput else []
        for q in ("p50", "p99"):
            if self.latency_ms.get(q) is not None:
                out.append(Number(f"{q}_ms", float(self.latency_ms[q]), "lower"))
        if self.cv_robust is not None and not math.isnan(self.cv_robust):
            out.append(Number("cv_robust", self.cv_robust, None))
        return out


@dataclass(kw_only=True)
class BuildRow(Row):
    TYPE: ClassVar[str] = "build"

    build_seconds: float | None = None
    engine_size: int | None = None
    cache_hit: bool | None = None
    engine_key: str | None = None
    setup: dict[str, Any] = field(default_factory=dict)
    engine_info: dict[str, Any] = field(default_factory=dict)
    recipe_info: dict[str, Any] = field(default_factory=dict)

    def numbers(self) -> list[Number]:
        out = [Number("engine_size", float(self.engine_size), None)] if self.engine_size else []
        if self.build_seconds is not None and not self.cache_hit:
            out.append(Number("build_seconds", self.build_seconds, None))
        return out


@dataclass(kw_only=True)
class StationRow(Row):
    """A station timed in one mode at one batch: a request is one frame, every member model run once on the
    frame's batch. ``model`` holds the station's name (so that everything grouping rows by model groups
    stations), ``recipe`` and ``profile`` its members' (joined with "+" where they differ); ``members`` says
    which model ran under which recipe and profile. ``latency_ms`` is the cycle time per frame; the serial
    time and speed-up a report shows come from the serial row of the same station, backend and batch.
    Added in schema 2 (a new type: no row of another type changed)."""

    TYPE: ClassVar[str] = "station"
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile", "mode", "batch", "resident",
                                      "cuda_graph")

    mode: str
    batch: int
    resident: bool = True
    cuda_graph: bool = False
    members: list[dict[str, Any]] = field(default_factory=list)  # {"model", "recipe", "profile"} per member
    fps_target: float | None = None  # the frame rate the station must hold (registry), if any
    runners: int | None = None
    threads_per_runner: int | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    engine_keys: list[str] = field(default_factory=list)  # the engines timed, in member order (merged: one)
    cache_hit: bool | None = None  # every engine came from the cache
    merged: dict[str, Any] = field(default_factory=dict)  # merged mode: the composed graph and its output check
    throughput: float | None = None  # samples / s through the station (frames x batch)
    fps: float | None = None  # frames / s
    iterations: int | None = None  # frames timed
    wall_s: float | None = None
    warmup_iters: int | None = None
    warmup_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # per frame: mean, min, p50, p90, p95, p99, max, std
    latency_hist: dict[str, Any] | None = None  # harness.histogram.LogHistogram.to_dict(), seconds
    member_ms: list[float] = field(default_factory=list)  # serial mode: each member's mean time within a frame
    cv: float | None = None
    cv_robust: float | None = None
    window_throughputs: list[float] = field(default_factory=list)
    drift: float | None = None
    stable: bool | None = None
    unstable_reasons: list[str] = field(default_factory=list)
    runner: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return bool(self.throughput) and self.status in ("pass", "unstable")

    @property
    def cycle_ms(self) -> float | None:
        """Time per frame for all the station's models (the mean frame latency)."""
        return self.latency_ms.get("mean")

    @property
    def config(self) -> str:
        return f"{self.mode} b{self.batch}" + (" +graph" if self.cuda_graph else "") + ("" if self.resident else " +copy")

    def numbers(self) -> list[Number]:
        out = [Number("fps", self.fps, "higher")] if self.fps else []
        for q in ("mean", "p50", "p99"):
            if self.latency_ms.get(q) is not None:
                out.append(Number(f"cycle_{q}_ms", float(self.latency_ms[q]), "lower"))
        if self.cv_robust is not None and not math.isnan(self.cv_robust):
            out.append(Number("cv_robust", self.cv_robust, None))
        return out


@dataclass(kw_only=True)
class DoctorRow(Row):
    """The precision doctor on one failing accuracy case (:mod:`harness.doctor`): where the error starts (the
    nodes most sensitive, and the first whose error passes the budgets' scale), the smallest keep_fp32 list
    found that makes the gate pass, the recipe written for it, and its price in serial throughput. ``status``:
    ``fixed``, ``no fix``, ``passes`` (the gate held already: nothing to fix) or ``error``. Added in schema 4
    (a new type: no row of another type changed)."""

    TYPE: ClassVar[str] = "doctor"

    samples: int | None = None  # samples compared node by node
    eval_samples: int | None = None  # samples each gate ran on (the evaluation set)
    budget_labels: list[str] = field(default_factory=list)  # the budgets the fix must meet
    scale: float | None = None  # the budgets' error scale (a relative L2 error)
    scale_source: str | None = None  # the budget it comes from
    compare: dict[str, Any] = field(default_factory=dict)  # chunk, chunks, seconds, held_peak_mb, rss_peak_mb...
    first_over: dict[str, Any] | None = None  # the first node whose cumulative error passes the scale
    nodes: list[dict[str, Any]] = field(default_factory=list)  # the most sensitive nodes (harness.doctor.compare)
    nodes_compared: int | None = None
    candidates: int | None = None  # nodes the recipe converted or quantized (what keep_fp32 can name)
    gate_before: dict[str, Any] = field(default_factory=dict)  # GateResult.to_dict() of the failing recipe
    gate_after: dict[str, Any] = field(default_factory=dict)  # of the fixed recipe, re-gated from its TOML
    keep_fp32: list[str] = field(default_factory=list)
    # int8: kept nodes that still read an input through a Q/DQ pair (quantized for another reader), with those inputs
    kept_read_dequantized: dict[str, list[str]] = field(default_factory=dict)
    fixed_recipe: str | None = None
    toml: str | None = None
    toml_path: str | None = None
    search: list[dict[str, Any]] = field(default_factory=list)  # every gate the search evaluated
    reason: str | None = None  # why there is no fix, or why it may not be the smallest
    out_of_time: bool | None = None
    max_minutes: float | None = None
    price: dict[str, Any] = field(default_factory=dict)  # harness.doctor.prescription.serial_price
    seconds: float | None = None

    def numbers(self) -> list[Number]:
        out = [Number("keep_fp32", float(len(self.keep_fp32)), "lower")] if self.status == "fixed" else []
        tp = self.price.get("throughput", {})
        if tp.get("fixed") and tp.get("failing"):
            out.append(Number("price", tp["fixed"] / tp["failing"], "higher"))
        return out


@dataclass(kw_only=True)
class SelfCheckRow(Row):
    """An engine compared with itself (schema 5): ``consistency`` (a sample's outputs at every batch position and
    batch size of the profile against its outputs alone) or ``determinism`` (two builds of the recipe with the
    cache bypassed, and repeated runs of one engine, against the first). ``metrics``, ``outputs`` and ``budgets``
    are as an accuracy row's, over the comparisons; ``worst`` names the worst ones in words."""

    TYPE: ClassVar[str] = "selfcheck"
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile", "check")

    check: str
    batches: list[int] = field(default_factory=list)  # consistency: the batch sizes run
    samples: int | None = None
    comparisons: int | None = None  # sample outputs compared
    budget_source: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    budgets: list[BudgetValue] = field(default_factory=list)
    nonfinite_samples: int = 0
    worst: list[dict[str, Any]] = field(default_factory=list)  # {"where", "output", "rel_l2"}, worst first
    builds: list[dict[str, Any]] = field(default_factory=list)  # determinism: each build's seconds, size, checksum
    engine_key: str | None = None
    cache_hit: bool | None = None
    seconds: float | None = None

    def numbers(self) -> list[Number]:
        worst = self.metrics.get("rel_l2.max")
        return [Number("rel_l2.max", worst, "lower")] if worst is not None else []


@dataclass(kw_only=True)
class ServerRow(Row):
    """Open-loop serving (schema 5): requests arrive by a Poisson process at an offered rate and queue for N
    runners; latency counts from each request's scheduled arrival. ``rate`` is what the case asked for: a rate
    ("200/s"), a share of the measured capacity ("90%"), or "search" for the highest rate that keeps ``bound``
    (``--perf-latency-bound``). ``points`` holds every rate run (the throughput-latency curve); the top-level
    numbers are those of the point the case reports: its rate, or the search's answer."""

    TYPE: ClassVar[str] = "server"
    KEY: ClassVar[tuple[str, ...]] = ("model", "backend", "recipe", "profile", "batch", "concurrency", "resident",
                                      "cuda_graph", "rate", "bound")

    batch: int
    concurrency: int = 1
    resident: bool = True
    cuda_graph: bool = False
    rate: str = ""
    bound: str = ""  # "p99<=20ms" for a search, "" otherwise
    threads_per_runner: int | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    engine_key: str | None = None
    cache_hit: bool | None = None
    capacity: float | None = None  # requests / s, closed loop over the same runners
    offered_rate: float | None = None  # requests / s of the reported point (None: no rate keeps the bound)
    throughput: float | None = None  # samples / s completed at that point
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # from arrival: mean, p50, p90, p99, max
    latency_hist: dict[str, Any] | None = None
    points: list[dict[str, Any]] = field(default_factory=list)  # every rate run: rate, latencies, queueing
    search: dict[str, Any] = field(default_factory=dict)  # the search's steps, stop rule and confidence
    load_check: dict[str, Any] = field(default_factory=dict)  # accuracy under load (harness.load_check)
    runner: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.offered_rate is not None and self.status == "pass"

    @property
    def config(self) -> str:
        return (f"server b{self.batch} n{self.concurrency}" + (" +graph" if self.cuda_graph else "")
                + ("" if self.resident else " +copy"))

    def numbers(self) -> list[Number]:
        # a search's answer is better higher; at a given rate what is served follows the rate, and latency is judged
        search = self.rate == "search"
        out = [Number("served_per_s", self.throughput, "higher" if search else None)] if self.throughput else []
        p99 = self.latency_ms.get("p99")
        if p99 is not None:
            out.append(Number("p99_ms", float(p99), None if search else "lower"))
        return out


ROW_TYPES: dict[str, type[Row]] = {c.TYPE: c for c in (AccuracyRow, PerfRow, BuildRow, StationRow, DoctorRow,
                                                       SelfCheckRow, ServerRow)}
AnyRow = typing.Union[AccuracyRow, PerfRow, BuildRow, StationRow, DoctorRow, SelfCheckRow, ServerRow]


def junit_properties(row: Row) -> list[tuple[str, object]]:
    """A test's properties in the JUnit XML, so that CI dashboards show the numbers: status, key numbers."""
    props: list[tuple[str, object]] = [("status", row.status)]
    props += [(n.name, f"{n.value:.6g}") for n in row.numbers()]
    if isinstance(row, (PerfRow, StationRow)) and row.stable is not None:
        props.append(("stable", "yes" if row.stable else "no"))
    if isinstance(row, PerfRow) and row.state_flags:
        props.append(("state_flags", "; ".join(row.state_flags)))
    return props


# ------------------------------------------------------------------------------------------ reading


def migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a row's JSON from ``version`` to :data:`SCHEMA_VERSION` (returns a new dict)."""
    data = dict(data)
    if version < 2:
        # version 1 budgets had only label, output, value and verdict: :func:`_budget` reads the statistic,
        # comparison and bound from the label (whatever the version), so compare and history can match them
        data.pop("variant", None)  # a key field no writer ever set
    if version < 3 and not isinstance(data.get("device"), dict):
        # the device from the row's environment: the harness then always ran on CUDA device 0, which without
        # CUDA_VISIBLE_DEVICES is NVML's GPU 0; no UUID was recorded (results.merge lets a newer row of the
        # same case on the same host and GPU index replace such a row)
        env = data.get("env")
        device = device_of(env if isinstance(env, dict) else {}, data.get("backend") in _GPU_BACKENDS_BEFORE_V3)
        if device["kind"] == "gpu" and device["index"] is None:
            device["index"] = 0
        data["device"] = device
    # version < 5: nothing to rewrite; a perf row without ``sync`` is keyed as spin (PerfRow.case_key), and
    # one without ``state`` was measured on a machine nobody recorded
    data["schema"] = SCHEMA_VERSION
    return data


def _budget_v2(b: dict[str, Any]) -> dict[str, Any]:
    if "statistic" in b or not isinstance(b.get("budget"), str):
        return b
    statistic, op, bound = split_budget_label(b["budget"])
    return {**b, "statistic": statistic, "op": op, "bound": bound}


def parse_row(data: Any, where: str) -> AnyRow:
    """Validate one row's JSON and return its typed row; ``where`` ("reports/rows/x/gw0.jsonl:12") names it
    in errors."""
    if not isinstance(data, dict):
        raise RowError(f"{where}: a row must be a JSON object, got {type(data).__name__}")
    version = data.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RowError(f"{where}: 'schema' must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RowError(f"{where}: row schema {version} is newer than this harness's {SCHEMA_VERSION}; upgrade "
                       "the harness to read it")
    data = migrate(data, version)
    cls = ROW_TYPES.get(str(data.get("type")))
    if cls is None:
        raise RowError(f"{where}: 'type' must be one of {', '.join(ROW_TYPES)}, got {data.get('type')!r}")
    declared = _fields(cls)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("schema", "type"):
            continue
        check = declared.get(name)
        if check is None or name == "extra":
            extra[name] = value
            continue
        if not check(value):
            raise RowError(f"{where}: {cls.TYPE} row field {name!r} must be {_describe(cls, name)}, got {value!r}")
        kwargs[name] = value
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in kwargs]
    if missing:
        raise RowError(f"{where}: {cls.TYPE} row lacks required field(s) {', '.join(missing)}")
    if extra:
        log.debug("%s: keeping field(s) this schema does not declare: %s", where, ", ".join(extra))
    if "budgets" in kwargs:
        kwargs["budgets"] = [_budget(b, f"{where}: budgets[{i}]") for i, b in enumerate(kwargs["budgets"])]
    if "env" in kwargs:
        check_environment(kwargs["env"], f"{where}: env")
    return cls(**kwargs, extra=extra)  # type: ignore[return-value]


def check_environment(env: dict[str, Any], where: str) -> None:
    for name, kind in ENV_FIELDS.items():
        value = env.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise RowError(f"{where}: {name!r} must be {_type_name(kind)}, got {value!r}")


def _budget(b: Any, where: str) -> BudgetValue:
    if not isinstance(b, dict) or not isinstance(b.get("budget"), str):
        raise RowError(f"{where}: a budget must be an object with a 'budget' label, got {b!r}")
    known = {f.name for f in dataclasses.fields(BudgetValue)}
    kept = {k: v for k, v in _budget_v2(b).items() if k in known}
    value = kept.get("value")
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise RowError(f"{where}: 'value' must be a number, got {value!r}")
    return BudgetValue(**kept)


def _type_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false",
                        dict: "an object", list: "a list"}.get(k, k.__name__) for k in kinds)


def _describe(cls: type[Row], name: str) -> str:
    kinds, optional = _kinds(typing.get_type_hints(cls)[name])
    return " or ".join(_type_name(k) for k in kinds if k is not int or float not in kinds) + \
        (" or null" if optional else "")


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {}


def _fields(cls: type[Row]) -> dict[str, Callable[[Any], bool]]:
    """Field name -> a check of a JSON value against the field's declared type (built once per type)."""
    if cls.__name__ not in _CHECKS:
        hints = typing.get_type_hints(cls)
        _CHECKS[cls.__name__] = {f.name: _checker(hints[f.name]) for f in dataclasses.fields(cls)}
    return _CHECKS[cls.__name__]


def _kinds(hint: Any) -> tuple[list[Any], bool]:
    """The runtime types a field's annotation allows (``dict[str, float]`` -> dict), and whether None."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [typing.get_origin(m) or m for m in members if m is not type(None)]
    if float in kinds:
        kinds.append(int)  # JSON writes 2.0 as 2
    return kinds, type(None) in members


def _checker(hint: Any) -> Callable[[Any], bool]:
    kinds, optional = _kinds(hint)

    def check(value: Any) -> bool:
        if value is None:
            return optional
        if isinstance(value, bool):
            return bool in kinds or Any in kinds
        return any(k is Any or isinstance(value, k) for k in kinds)

    return check

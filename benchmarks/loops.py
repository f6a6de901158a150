"""What benchmarks/overhead.py and benchmarks/ort_setup.py share: the loop a user writes by hand, the row path
on a real HarnessSession, the configurations (model x batch), and a description of the machine.

The user's loop is what someone timing ONNX Runtime writes without the harness: the source model loaded with
``ORT_ENABLE_ALL`` and otherwise default session options, ONNX Runtime's own stream and threads; on the CPU
``session.run(None, feeds)`` on numpy arrays, on CUDA the inputs put on the device once (``OrtValue`` on
``cuda``, I/O binding, outputs bound to ``cuda``) and ``session.run_with_iobinding(binding)``, as the row's
device-resident inputs are. TF32 is off on both sides, so that both compute the same FP32 arithmetic. The
session is created anew for every repetition (as every row creates its runner), warmed up for 0.2 s, then a
loop of n iterations is timed with ``perf_counter`` around it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.backends import Backend, Engine, get_backend  # noqa: E402
from harness.cache import default_root  # noqa: E402
from harness.cpu_features import cpu_features  # noqa: E402
from harness.data import SampleSet, batch_size_of  # noqa: E402
from harness.environment import cpu_count, cpu_model  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.perf import PerfCase, check_perf  # noqa: E402
from harness.recipes import apply_recipe  # noqa: E402
from harness.resources import ResourceMonitor  # noqa: E402
from harness.rows import PerfRow  # noqa: E402
from harness.session import HarnessSession, PerfSettings, Settings  # noqa: E402
from harness.spec import ModelSpec  # noqa: E402

WARMUP = 0.2


@dataclass(frozen=True)
class Config:
    model: str
    batch: int
    which: str  # "1", "opt" or "max"

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch} ({self.which})"


def session(backend: str, *, seconds: float, min_iters: int, report_dir: Path, cache_dir: Path | None,
            ort_setup: dict[str, Any] | None = None) -> HarnessSession:
    """A HarnessSession as the plugin makes one for ``pytest -m perf --backends BACKEND``."""
    perf = PerfSettings(modes=["serial"], duration=seconds, warmup=WARMUP, min_iters=min_iters)
    settings = Settings(registry=ROOT / "fixtures" / "models.toml", report_dir=report_dir,
                        cache_dir=cache_dir or default_root(ROOT), backends=[backend], perf=perf,
                        ort_setup=dict(ort_setup or {}))
    return HarnessSession(settings, worker="bench")


def add_common_args(ap: argparse.ArgumentParser, out_file: str) -> None:
    """The options every benchmark here takes: backend, models, their batches, engine cache, output folder."""
    ap.add_argument("--backend", default="ort_cpu")
    ap.add_argument("--models", default="classifier,ocr_rec,encoder")
    ap.add_argument("--batches", default="1,opt,max", help="of each model's dynamic profile: 1, opt, max")
    ap.add_argument("--cache", type=Path, help="engine cache (default: the project's)")
    ap.add_argument("--out", type=Path, help=f"write {out_file} there")


def available_backend(name: str) -> Backend | None:
    """The backend, or None after printing why it cannot run here."""
    backend = get_backend(name)
    reason = backend.unavailable()
    if reason:
        print(f"{name}: {reason}")
        return None
    return backend


def fp32_engine(hs: HarnessSession, backend: Backend, model: str) -> Engine:
    """The model's fp32 engine on its dynamic profile, built (or found in the cache) as a perf row builds it."""
    spec = hs.model(model)
    art = apply_recipe(hs.recipe("fp32"), spec, hs.cache)
    return backend.build(art.path, spec.profiles["dynamic"], hs.cache, label=f"{spec.name}/{backend.name}/fp32-dynamic",
                         model_hash=art.model_hash, options=hs.build_options(backend, art.build_options))


def run_main(main: Callable[[], int]) -> int:
    """A benchmark's exit status; bad input (an unknown model, option or backend) one line naming it, exit 2."""
    try:
        return main()
    except HarnessError as exc:
        print(f"{Path(sys.argv[0]).name}: {exc}", file=sys.stderr)
        return 2


def configs(hs: HarnessSession, models: list[str], batches: list[str]) -> tuple[list[Config], list[str]]:
    """Each model's batch 1, opt and max of its dynamic profile; models that cannot run here are named."""
    bad = [w for w in batches if w not in ("1", "min", "opt", "max")]
    if bad:
        raise HarnessError(f"--batches: {', '.join(map(repr, bad))} is not one of 1, min, opt, max")
    out, skipped = [], []
    for name in models:
        spec = hs.model(name)
        if spec.unavailable:
            skipped.append(f"{name}: {spec.unavailable}")
            continue
        profile = spec.profiles["dynamic"]
        seen = set()
        for which in batches:
            b = 1 if which == "1" else batch_size_of(spec, profile, which)
            if b not in seen:
                seen.add(b)
                out.append(Config(name, b, which))
    return out, skipped


def feeds(spec: ModelSpec, batch: int) -> dict[str, Any]:
    """The batch a perf row times (the same samples)."""
    return next(SampleSet(spec, spec.profiles["dynamic"], size=batch).batches(batch)).feeds


def row_path(hs: HarnessSession, backend: str, c: Config, *, sync: str = "spin",
             monitor: ResourceMonitor | None = None) -> PerfRow:
    """One serial row, exactly as ``pytest -m perf`` makes it (written to the session's report dir)."""
    return check_perf(hs, PerfCase(c.model, backend, "fp32", "dynamic", "serial", c.batch, sync=sync),
                      monitor=monitor)


class UserLoop:
    """The loop a user writes by hand (module docstring): a fresh session per repetition."""

    def __init__(self, backend: str, spec: ModelSpec, batch: int):
        self.backend, self.spec, self.batch = backend, spec, batch
        self.feeds: dict[str, Any] = {}

    def _make(self) -> Callable[[], Any]:
        import onnxruntime as ort

        # a fresh input per repetition, as every row makes its own: a large batch's pages are new on both sides
        self.feeds = feeds(self.spec, self.batch)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if self.backend == "ort_cpu":
            sess = ort.InferenceSession(str(self.spec.path), so, providers=["CPUExecutionProvider"])
            f = self.feeds
            return lambda: sess.run(None, f)
        sess = ort.InferenceSession(str(self.spec.path), so,
                                    providers=[("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})])
        binding = sess.io_binding()
        for name, arr in self.feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", 0)
        self._keep = sess, binding
        return lambda: sess.run_with_iobinding(binding)

    def measure(self, seconds: float, min_iters: int) -> float:
        """Samples per second of one repetition."""
        step = self._make()
        t0 = time.perf_counter()
        n = 0
        while True:  # warm-up, discarded, as long as the row's
            step()
            n += 1
            if time.perf_counter() - t0 >= WARMUP:
                break
        per = (time.perf_counter() - t0) / n
        iters = max(min_iters, int(seconds / per) + 1)
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        wall = time.perf_counter() - t0
        self._keep = None
        return iters * self.batch / wall


def bare_rate(runner: Any, seconds: float, batch: int, *, warmup: float = WARMUP, min_iters: int = 1) -> float:
    """Samples/s of a bare loop over the runner's timed call (the call the serial mode makes): warm-up, then
    ``perf_counter`` around n calls."""
    fn, args = runner.timed_call()
    t0, n = time.perf_counter(), 0
    while True:
        fn(*args)
        n += 1
        if time.perf_counter() - t0 >= warmup:
            break
    iters = max(min_iters, int(seconds / ((time.perf_counter() - t0) / n)) + 1)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(*args)
    return iters * batch / (time.perf_counter() - t0)


@dataclass
class Series:
    """Samples/s of one side of one configuration, repetition by repetition."""

    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, median, high): the median and a distribution-free confidence interval for it, from order
    statistics (the number of values below the true median is binomial(n, 1/2)); the bounds are NaN where
    there are too few values for that confidence (fewer than 6 for 95 %)."""
    x = sorted(v for v in values if not math.isnan(v))
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    med = statistics.median(x)
    # [x_k, x_(n-1-k)] (0-based) misses the median with probability 2 P(Binomial(n, 1/2) <= k): the largest k
    # that keeps that within 1 - confidence
    tail, k, cum = (1.0 - confidence) / 2.0, -1, 0.0
    for j in range((n + 1) // 2):
        cum += math.comb(n, j) / 2.0**n
        if cum > tail:
            break
        k = j
    return (x[k], med, x[n - 1 - k]) if k >= 0 else (math.nan, med, math.nan)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpu": cpu_model(), "cores": cpu_count(), "cpu_features": list(cpu_features()),
            "load_avg": [round(x, 2) for x in load]}


def temp_report_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))

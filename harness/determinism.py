"""Determinism: two builds of one recipe, and repeated runs of one engine, give the same outputs.

The engine cache makes every run reuse one build, so a builder that picks other kernels each time (TensorRT
times tactics and keeps the fastest, which a busy GPU can change) would only show on the night the cache is
cleared, as an accuracy change nobody made. So this gate builds the recipe's artifact twice with the cache
bypassed: each build into a fresh temporary cache of its own (no engine, no timing cache to reuse), removed
afterwards; the run's own cache is neither read nor written for the engines. Then it runs, on the first
evaluation samples at the profile's opt shape, in batches of the opt batch:

* the first build's engine: once, and ``REPEATS`` more times on the same runner;
* a second runner of the same engine, once;
* the second build's engine, once;

and compares every run with the first, under the registry's determinism bounds (default ``max(rel_l2) <=
1e-6`` for FP32: :data:`harness.budgets.DEFAULT_CHECK_BOUNDS`). The row records both builds (seconds, size, and
whether the two engine files are byte for byte the same).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from .cache import Cache
from .data import SampleSet, batch_size_of, unpad
from .rows import SelfCheckRow
from .selfcheck import Comparisons, SelfCheckCase, build_engine, run_check
from .session import HarnessSession
from .spec import ModelSpec

REPEATS = 2  # runs of the first runner after its first one


def _checksum(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def check_determinism(hs: HarnessSession, case: SelfCheckCase) -> SelfCheckRow:
    """Run one determinism case; write and return its row, or raise SelfCheckFailure with the numbers."""
    __tracebackhide__ = True

    def body(spec: ModelSpec, row: SelfCheckRow, comparisons: Comparisons) -> str:
        profile = spec.profiles[case.profile]
        opt = batch_size_of(spec, profile)
        samples = SampleSet(spec, profile, size=min(max(opt, 8), hs.settings.eval_size or spec.eval_size))
        samples.check_profile()
        batches = list(samples.batches(fill=True))
        row.update(samples=samples.count, batches=[opt])
        axes = spec.output_batch_axes

        def run(runner: object) -> list[dict]:
            return [unpad(runner.infer(b.feeds), b.count, axes) for b in batches]  # type: ignore[attr-defined]

        def compare(outs: list[dict], first: list[dict], what: str) -> None:
            for b, out, ref in zip(batches, outs, first):
                comparisons.add(out, ref, [f"sample #{b.index + i} ({what})" for i in range(b.count)])

        with tempfile.TemporaryDirectory(prefix="harness-determinism-") as tmp:
            engines = []
            for k in range(2):
                cache = Cache(Path(tmp) / f"build{k + 1}", run_id=hs.run_id)
                engine, _ = build_engine(hs, spec, case, cache)
                engines.append(engine)
                row.builds.append({"build_seconds": round(engine.entry.build_seconds, 3), "size": engine.entry.size,
                                   "checksum": _checksum(engine.path)})
            with engines[0].runner() as runner:
                first = run(runner)
                for r in range(REPEATS):
                    compare(run(runner), first, f"run {r + 2} of the first runner")
            with engines[0].runner() as runner:
                compare(run(runner), first, "a second runner")
            with engines[1].runner() as runner:
                compare(run(runner), first, "the second build")
        return "determinism"

    return run_check(hs, case, body)

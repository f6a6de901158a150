"""Batch consistency: a sample's outputs must not depend on where it sits in a batch, nor on the batch's size.

A deployment batches whatever requests arrive together, so one request's answer must not depend on its
neighbours: kernels that mix the rows of a batch, a reduction over the wrong axis, a padding path taken only
at some batch sizes, or the engine returning different outputs for identical inputs in one batch
(NVIDIA/TensorRT#4813: four copies of one input, four different outputs) all break that.

For the first ``SAMPLES`` evaluation samples (real ones where the model has them), at the profile's opt
dimensions:

1. each sample *alone*: in a batch of the profile's smallest batch size (its copies filling the rest when that
   is above 1), which is what every other situation is compared with;
2. at every batch size among the profile's min, opt and max batches: a batch of *copies* of the first sample,
   every position compared; and the samples *mixed*, cycled to fill the batch, in two
   rotations so that each sample lands at several positions with other neighbours.

Each position's outputs are compared with the sample's alone, under the registry's consistency bounds
(default ``max(rel_l2) <= 1e-6`` for FP32: :data:`harness.budgets.DEFAULT_CHECK_BOUNDS`). A failure names
the worst comparisons: "sample #2 at position 3 of a batch of 8 (mixed, rotation 1): 0.41".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import SampleSet, batch_size_of
from .rows import SelfCheckRow
from .selfcheck import Comparisons, SelfCheckCase, build_engine, concat, run_check, take
from .session import HarnessSession
from .spec import ModelSpec

SAMPLES = 8  # samples compared (each alone, and at many positions): enough neighbours for a batch of 8
COPIED = 1  # samples whose batch of copies is run at each size (one shows NVIDIA/TensorRT#4813)
ROTATIONS = 2


def batch_sizes(spec: ModelSpec, profile: Any) -> list[int]:
    return sorted({batch_size_of(spec, profile, w) for w in ("min", "opt", "max")})


def _stack(samples: SampleSet, order: list[int]) -> dict[str, np.ndarray]:
    """A batch whose position p holds sample ``order[p]``."""
    parts = [samples.samples(i, i + 1) for i in order]
    out = {}
    for name, ispec in samples.spec.inputs.items():
        ax = ispec.batch_axis
        out[name] = parts[0][name] if ax is None else np.ascontiguousarray(np.concatenate([p[name] for p in parts], axis=ax))
    return out


def check_consistency(hs: HarnessSession, case: SelfCheckCase) -> SelfCheckRow:
    """Run one batch-consistency case; write and return its row, or raise SelfCheckFailure with the numbers."""
    __tracebackhide__ = True

    def body(spec: ModelSpec, row: SelfCheckRow, comparisons: Comparisons) -> str:
        profile = spec.profiles[case.profile]
        samples = SampleSet(spec, profile, size=min(SAMPLES, hs.settings.eval_size or spec.eval_size))
        sizes = batch_sizes(spec, profile)
        for b in sizes:
            samples.check_profile(b)
        n = samples.count
        row.update(batches=sizes, samples=n)
        engine, _ = build_engine(hs, spec, case)
        row.update(engine_key=engine.entry.key, cache_hit=engine.entry.hit)
        axes = spec.output_batch_axes
        with engine.runner() as runner:
            smallest = sizes[0]
            alone = [take(runner.infer(_stack(samples, [i] * smallest)), [0], axes) for i in range(n)]
            for b in sizes:
                runs = [(f"copies of sample #{i}", [i] * b) for i in range(min(COPIED, n))]
                if b > 1:
                    # rotations shift which sample sits where (and next to what): by half the set each time
                    runs += [(f"mixed, rotation {r}", [(p + r * max(1, n // ROTATIONS)) % n for p in range(b)])
                             for r in range(ROTATIONS if n > 1 else 1)]
                for what, order in runs:
                    # the first batch of copies at the smallest size is where "alone" came from: skip its position 0
                    itself = b == smallest and len(set(order)) == 1
                    positions = [p for p in range(b) if not (itself and p == 0)]
                    if not positions:
                        continue
                    out = runner.infer(_stack(samples, order))
                    comparisons.add(take(out, positions, axes), concat([alone[order[p]] for p in positions], axes),
                                    [f"sample #{order[p]} at position {p} of a batch of {b} ({what})"
                                     for p in positions])
        return "batch consistency"

    return run_check(hs, case, body)

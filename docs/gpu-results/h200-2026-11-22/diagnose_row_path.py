"""Where the ort_cuda row path loses to a user's loop: interleaved sides, paired per repetition."""
import dataclasses, statistics, sys, time
sys.path.insert(0, ".")
from benchmarks.loops import UserLoop, configs, session, row_path, temp_report_dir
from benchmarks.overhead import harness_bare
from harness.resources import ResourceMonitor
from harness.environment import this_gpu_index

import os
B = os.environ.get("B", "ort_cuda")
rd = temp_report_dir("diag")
hs = session(B, seconds=1.0, min_iters=20, report_dir=rd, cache_dir=None)
hs0 = session(B, seconds=1.0, min_iters=20, report_dir=rd / "nocheck", cache_dir=None)
hs0.settings.perf.check_requests = 0
cfgs, _ = configs(hs, os.environ.get("M", "classifier,encoder").split(","), ["1", "opt"])
sides = {
    "user": lambda c: users[c].measure(1.0, 20),
    "bare": lambda c: harness_bare(hs, B, c, 1.0, 20),
    "row": lambda c: row_path(hs, B, c).throughput,
    "row nocheck": lambda c: row_path(hs0, B, c).throughput,
    "row nocheck idle-mon": lambda c: row_path(hs0, B, c, monitor=ResourceMonitor(interval=3600.0, gpu_index=this_gpu_index())).throughput,
}
users = {c: UserLoop(B, hs.model(c.model), c.batch) for c in cfgs}
res = {c: {s: [] for s in sides} for c in cfgs}
for rep in range(3):
    for c in cfgs:
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for s in order:
            res[c][s].append(sides[s](c))
        print(rep, c.label if hasattr(c, "label") else c, {s: round(v[-1]) for s, v in res[c].items()}, flush=True)
for c in cfgs:
    u = res[c]["user"]
    print(c, "  ".join(f"{s} {statistics.median([a / b for a, b in zip(v, u)]):.3f}" for s, v in res[c].items()))

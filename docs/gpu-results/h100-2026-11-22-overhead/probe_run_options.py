"""From the repository root, with onnxruntime-gpu importable:
    python docs/gpu-results/h100-2026-11-22-overhead/probe_run_options.py 14   (rounds)

Whether a RunOptions object in run_with_iobinding costs anything, on the harness's own ORT CUDA runner (one
session per configuration, so no session-to-session kernel choice enters), 0.25 s slices of each side in
rotating order, medians of paired ratios with 95 % intervals:
  sync          run_with_iobinding(binding): ORT synchronizes the stream (the resident, spinning row's call)
  async+wait    run_with_iobinding(binding, disable_synchronize_execution_providers=1), then the runner's stream
                synchronized (what multistream submit and --perf-sync block do; copied inputs did)
  RunOptions()  run_with_iobinding(binding, default RunOptions()) (what the runner passed before the fix)
  row copied    runner.run() with copied inputs: upload on the stream, run (ORT synchronizes), download, wait
  row copied (async)  the same as it was: the run with disable_synchronize_execution_providers, one wait
  user copied   what a user writes for copied inputs on the same session: OrtValue.update_inplace per input,
                run_with_iobinding(binding), binding.copy_outputs_to_cpu()"""
import sys, time
sys.path.insert(0, ".")
import onnxruntime as ort
from benchmarks.loops import feeds, median_ci, session, temp_report_dir
from harness.backends import RunnerOptions, get_backend
from harness.backends.gpu_runner import GpuRunner
from harness.recipes import apply_recipe

backend = get_backend("ort_cuda")
print("ort_cuda:", backend.unavailable() or "available", flush=True)
hs = session("ort_cuda", seconds=0.25, min_iters=1, report_dir=temp_report_dir("ro-"), cache_dir=None)
PAIRS, SLICE = int(sys.argv[1]) if len(sys.argv) > 1 else 16, 0.25

def rate(step, batch):
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.05:
        step(); n += 1
    iters = max(5, int(SLICE / ((time.perf_counter() - t0) / n)))
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * batch / (time.perf_counter() - t0)

for model, batch in (("classifier", 1), ("classifier", 8), ("encoder", 1), ("encoder", 8), ("ocr_rec", 8)):
    spec = hs.model(model); profile = spec.profiles["dynamic"]
    art = apply_recipe(hs.recipe("fp32"), spec, hs.cache)
    engine = backend.build(art.path, profile, hs.cache, label="probe", model_hash=art.model_hash,
                           options=hs.build_options(backend, art.build_options))
    f = feeds(spec, batch)
    with engine.runner(RunnerOptions(threads=None)) as r:
        r.prepare(f, resident=True)
        b, s = r._binding, r.session
        asyn, plain = r._async, ort.RunOptions()
        def async_wait():
            s.run_with_iobinding(b, asyn); r.stream.synchronize()
        ins = {k: tb.device.value for k, tb in r._inputs.items()}
        def user_copied():
            for k, v in ins.items():
                v.update_inplace(f[k])
            s.run_with_iobinding(b)
            b.copy_outputs_to_cpu()
        def row_copied():
            r.run()
        def row_copied_old():  # before: upload, run with disable_synchronize, download, one wait
            GpuRunner.run(r)
        sides = {"sync": lambda: s.run_with_iobinding(b), "async+wait": async_wait,
                 "RunOptions()": lambda: s.run_with_iobinding(b, plain)}
        rates = {k: [] for k in [*sides, "row copied", "row copied (async)", "user copied"]}
        copied = {"row copied": row_copied, "row copied (async)": row_copied_old, "user copied": user_copied}
        for k in range(PAIRS):
            names = list(sides)
            names = names[k % 3:] + names[:k % 3]
            r.prepare(f, resident=True)
            for name in names:
                rates[name].append(rate(sides[name], batch))
            r.prepare(f, resident=False)
            names = list(copied)
            for name in names[k % 3:] + names[:k % 3]:
                rates[name].append(rate(copied[name], batch))
        def ci(a, bb):
            lo, m, hi = median_ci([x / y for x, y in zip(rates[a], rates[bb])])
            return f"{a} / {bb} {m:.3f} ({lo:.3f}-{hi:.3f})"
        med = sorted(rates["sync"])[PAIRS // 2]
        print(f"{model} b{batch}: sync {med:,.0f}/s  " + "  ".join(
            [ci("async+wait", "sync"), ci("RunOptions()", "sync"), ci("row copied", "user copied"), ci("row copied (async)", "user copied"),
             ci("row copied", "row copied (async)")]), flush=True)

"""Where a harness-style ORT CUDA loop loses to a user's: (A) one session, bindings that differ in one thing,
interleaved, so that no session-to-session kernel choice enters; (B) fresh sessions whose provider options differ."""
import statistics, sys, time, json, os
sys.path.insert(0, ".")
import numpy as np
from pathlib import Path
from harness.backends import get_backend
print("ort_cuda:", get_backend("ort_cuda").unavailable() or "available", flush=True)
import onnxruntime as ort
from benchmarks.loops import feeds
from harness import cuda
from harness.registry import load_registry

reg = load_registry(Path("fixtures/models.toml"))
CONFIGS = [("classifier", 8), ("encoder", 1), ("encoder", 8), ("ocr_rec", 32)]
T = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
stream0 = cuda.Stream()

def make_session(spec, extra=None, stream=None):
    so = ort.SessionOptions(); so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    po = {"device_id": "0", "use_tf32": "0", **(extra or {})}
    if stream is not None:
        po.update(user_compute_stream=str(stream.ptr), has_user_compute_stream="1")
    return ort.InferenceSession(str(spec.path), so, providers=[("CUDAExecutionProvider", po)])

def make_binding(sess, f, inp, out, keep):
    b = sess.io_binding()
    for n, a in f.items():
        if inp == "ortvalue":
            v = ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0); keep.append(v); b.bind_ortvalue_input(n, v)
        elif inp == "ortptr":
            v = ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0); keep.append(v)
            b.bind_input(n, "cuda", 0, a.dtype, list(a.shape), v.data_ptr())
        else:
            tb = cuda.TensorBuffers(a.shape, a.dtype); keep.append(tb); tb.host.array[...] = a
            tb.upload(stream0); stream0.synchronize()
            b.bind_input(n, "cuda", 0, a.dtype, list(a.shape), tb.device.ptr)
    for o in sess.get_outputs():
        b.bind_output(o.name, "cuda", 0)
    if out != "per-run":
        sess.run_with_iobinding(b); vals = b.get_outputs(); b.clear_binding_outputs()
        for o, v in zip(sess.get_outputs(), vals):
            dt = T[v.data_type()]
            if out == "cudamalloc":
                tb = cuda.TensorBuffers(tuple(v.shape()), dt); keep.append(tb)
                b.bind_output(o.name, "cuda", 0, dt, list(v.shape()), tb.device.ptr)
            else:
                nv = ort.OrtValue.ortvalue_from_shape_and_type(v.shape(), dt, "cuda", 0); keep.append(nv)
                b.bind_ortvalue_output(o.name, nv)
    return b

def rate(step, batch, seconds):
    t0 = time.perf_counter(); n = 0
    while time.perf_counter() - t0 < 0.05:
        step(); n += 1
    iters = max(10, int(seconds / ((time.perf_counter() - t0) / n)))
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * batch / (time.perf_counter() - t0)

A = {"user": ("ortvalue", "per-run", False), "in:cudaMalloc ptr": ("cudamalloc", "per-run", False),
     "in:OrtValue ptr": ("ortptr", "per-run", False), "out:cudaMalloc": ("ortvalue", "cudamalloc", False),
     "out:OrtValue": ("ortvalue", "ortvalue", False), "RunOptions": ("ortvalue", "per-run", True),
     "old harness (cudaMalloc in+out, RunOptions)": ("cudamalloc", "cudamalloc", True),
     "new harness (OrtValue in+out)": ("ortvalue", "ortvalue", False)}
HARNESS_PO = {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "0", "arena_extend_strategy": "kNextPowerOfTwo"}
B = {"user": (None, False), "explicit defaults": (HARNESS_PO, False), "own stream": (None, True),
     "explicit + own stream": (HARNESS_PO, True)}
out = {}
t_start = time.time()
for model, batch in CONFIGS:
    spec = reg.models[model]; f = feeds(spec, batch)
    # A: one session, every binding, interleaved
    for sess_no in range(2):
        sess = make_session(spec); keep = []
        steps = {}
        for k, (i, o, ro) in A.items():
            b = make_binding(sess, f, i, o, keep)
            r = ort.RunOptions() if ro else None
            steps[k] = (lambda b=b, r=r: sess.run_with_iobinding(b, r))
        res = {k: [] for k in A}
        for rnd in range(3):
            for k in (list(A) if rnd % 2 == 0 else list(reversed(A))):
                res[k].append(rate(steps[k], batch, 0.15))
        u = res["user"]
        line = {k: round(statistics.median([a / b for a, b in zip(v, u)]), 3) for k, v in res.items()}
        out[f"A {model} b{batch} s{sess_no}"] = {"user_rate": round(statistics.median(u)), **line}
        print(f"A {model} b{batch} session {sess_no}: user {statistics.median(u):,.0f}/s  " +
              "  ".join(f"{k} {v:.3f}" for k, v in line.items() if k != "user"), flush=True)
        del steps, keep, sess
    # B: fresh sessions per option set, user's binding, interleaved, 3 each
    res = {k: [] for k in B}
    for rnd in range(2):
        for k in (list(B) if rnd % 2 == 0 else list(reversed(B))):
            extra, own = B[k]
            s = cuda.Stream() if own else None
            sess = make_session(spec, extra, s); keep = []
            b = make_binding(sess, f, "ortvalue", "per-run", keep)
            res[k].append(rate(lambda: sess.run_with_iobinding(b), batch, 0.2))
            del b, keep, sess
            if s is not None:
                s.close()
    u = res["user"]
    line = {k: round(statistics.median([a / b for a, b in zip(v, u)]), 3) for k, v in res.items()}
    out[f"B {model} b{batch}"] = {"user_rates": [round(x) for x in u], **line, "raw": {k: [round(x) for x in v] for k, v in res.items()}}
    print(f"B {model} b{batch}: user {[round(x) for x in u]}  " + "  ".join(f"{k} {v:.3f}" for k, v in line.items() if k != "user"), flush=True)
    print(f"  ({time.time() - t_start:.0f} s)", flush=True)
Path(os.environ.get("R", "/tmp")).joinpath("probe.json").write_text(json.dumps(out, indent=1))

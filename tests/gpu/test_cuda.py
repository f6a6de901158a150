"""The harness's CUDA module on a real GPU: buffers, copies, streams, events, graphs, errors."""

import numpy as np
import pytest

from harness import cuda


def test_pinned_and_device_buffers_round_trip_on_a_stream():
    stream = cuda.Stream()
    a = cuda.TensorBuffers((4, 1000), np.float32)
    b = cuda.TensorBuffers((4, 1000), np.float32)
    data = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)
    a.host.array[...] = data
    b.host.array[...] = np.nan  # poisoned: every element must be written
    a.upload(stream)
    cuda.copy_device_to_device(b.device, a.device, stream, a.nbytes)
    b.download(stream)
    stream.synchronize()
    np.testing.assert_array_equal(b.host.array, data)
    for x in (a, b):
        x.close()
    stream.close()


def test_events_time_device_work():
    stream = cuda.Stream()
    big = cuda.TensorBuffers((64, 1 << 20), np.float32)  # 256 MiB
    other = cuda.DeviceBuffer(big.nbytes)
    start, end = cuda.Event(), cuda.Event()
    start.record(stream)
    for _ in range(4):
        cuda.copy_device_to_device(other, big.device, stream, big.nbytes)
    end.record(stream)
    end.synchronize()
    seconds = end.seconds_since(start)
    assert 0 < seconds < 1.0
    rate = 4 * 2 * big.nbytes / seconds / 1e12  # bytes read + written
    assert rate > 0.3, f"{rate:.2f} TB/s device-to-device"
    for x in (start, end, other, big, stream):
        x.close()


def test_a_captured_graph_replays_the_copies_it_captured():
    stream = cuda.Stream()
    src = cuda.TensorBuffers((1000,), np.int32)
    dst = cuda.TensorBuffers((1000,), np.int32)
    src.host.array[...] = np.arange(1000)
    src.upload(stream)
    stream.synchronize()
    graph = cuda.Graph(stream, lambda: cuda.copy_device_to_device(dst.device, src.device, stream, src.nbytes))
    dst.host.array[...] = -1
    dst.upload(stream)
    stream.synchronize()
    graph.launch(stream)
    dst.download(stream)
    stream.synchronize()
    np.testing.assert_array_equal(dst.host.array, np.arange(1000))
    graph.close()
    for x in (src, dst, stream):
        x.close()


def test_a_failing_call_names_itself():
    with pytest.raises(cuda.CudaError, match=r"cudaSetDevice\(999\) failed: cudaErrorInvalidDevice"):
        cuda.set_device(999)
    props = cuda.device_properties(0)
    assert props["name"] and props["compute_capability"] >= "7.0"
    assert cuda.runtime_version().count(".") == 1

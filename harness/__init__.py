"""The harness: accuracy gates and throughput benchmarks for inference engines built from ONNX models."""

__version__ = "0.1.0"

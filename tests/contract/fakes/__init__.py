"""Recording fakes of the TensorRT Python modules (10.13, 11.1, TensorRT-RTX 1.7) and of harness.cuda."""

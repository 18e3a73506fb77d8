"""Golden ONNX models for the conformance suite: ``meta`` (registry), ``make_models`` (builder)."""

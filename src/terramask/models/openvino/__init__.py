"""OpenVINO runtime (``--runtime openvino``): the encoders and decoders of terramask's ONNX
exports compiled by OpenVINO for the CPU at hand (:mod:`.settings`: threads, precision,
performance hint; :mod:`.backend`: the backends)."""

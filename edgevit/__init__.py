"""edgevit: an edge runtime with hardware co-design for small vision transformers.

Subpackages, in the direction data flows: ``models`` (zoo, weights, deploy form) -> ``quantization``
(PT2E) -> ``backends`` (ExecuTorch, ...) -> ``compile`` (pipeline, verification, manifest);
``devices`` holds the device profiles; ``data`` makes calibration inputs.
"""
__version__ = "0.1.0"

"""keraseq.export: Keras model -> ONNX with dynamic batch/sequence axes, and a
parity check of the graph against the Keras model.

TensorFlow, tf2onnx, onnx and onnxruntime are imported lazily, inside the
functions that need them, so importing this package is cheap.
"""

from keraseq.export._io import MAX_OPSET, MIN_OPSET
from keraseq.export.onnx_export import ExportResult, export_onnx
from keraseq.export.parity import ParityReport, check_parity, format_failure

__all__ = [
    "ExportResult",
    "export_onnx",
    "ParityReport",
    "check_parity",
    "format_failure",
    "MIN_OPSET",
    "MAX_OPSET",
]

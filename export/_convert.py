"""Command-line entry of the ONNX conversion, used as the TensorFlow child of
`export_onnx` when the caller runs JAX or PyTorch:

    KERAS_BACKEND=tensorflow python -m keraseq.export._convert SRC.keras DST.onnx \
        --opset 17 [--input-names a,b] [--output-names logits] [--source-backend jax]

On success it prints one JSON line (the `ExportResult` fields) on stdout and
exits 0. On failure it prints `keraseq.export error: <ExceptionType>: <message>`
as the last stderr line and exits 2 for a ValueError (bad input), 1 otherwise.
"""

import argparse
import json
import os
import sys
import traceback


def _names(text):
    return [name for name in text.split(",") if name] if text else None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keraseq.export._convert",
        description="Convert a .keras model to ONNX (dynamic batch/sequence axes).",
    )
    parser.add_argument("source", help=".keras file or directory with model.keras")
    parser.add_argument("destination", help="output .onnx path")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--input-names", default=None)
    parser.add_argument("--output-names", default=None)
    parser.add_argument("--source-backend", default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from keraseq._keras import import_keras

        import_keras()  # TensorFlow's C++ start-up lines muted, as `import keraseq` once did
        from keraseq.export.onnx_export import export_onnx

        result = export_onnx(
            args.source,
            args.destination,
            opset=args.opset,
            input_names=_names(args.input_names),
            output_names=_names(args.output_names),
            source_backend=args.source_backend,
            method="tf2onnx",  # the parent asked for tf2onnx (or fell back to it)
        )
    except Exception as error:  # noqa: BLE001 - reported to the parent
        traceback.print_exc(file=sys.stderr)
        message = " ".join(str(error).split())
        print(
            f"keraseq.export error: {type(error).__name__}: {message}",
            file=sys.stderr,
            flush=True,
        )
        return 2 if isinstance(error, ValueError) else 1
    print(json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

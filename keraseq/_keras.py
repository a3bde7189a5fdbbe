"""The one place keraseq imports Keras: quietly, and only when a module needs it.

Every keraseq module that uses Keras (`keraseq.layers`, `keraseq.text`,
`keraseq.models`, ...) calls `import_keras()` before its own `import keras`, so
the first import happens here, with TensorFlow's native start-up lines muted.
`import keraseq` alone does not import Keras (see `keraseq/__init__.py`), which
keeps the ONNX generation path (`keraseq.export.runtime`) free of Keras and of every
backend.
"""

import contextlib
import os
import sys


def import_keras():
    """Import Keras with native stderr muted, unless KERASEQ_VERBOSE is set.

    With the TensorFlow backend, TF 2.21 writes C++ start-up lines
    (`I0000 ... cudart_stub.cc`, oneDNN notes) straight to file descriptor 2,
    ignoring TF_CPP_MIN_LOG_LEVEL. They would bury the command line's one-line
    messages. Python exceptions raised by the import propagate unchanged, after
    stderr is restored. Calling it again costs a dictionary lookup.

    Returns:
        The `keras` module.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras

        # The first op initialises the backend's devices; TensorFlow reports
        # a missing CUDA driver (`E0000 ... cuInit`) there, so do it now.
        keras.ops.zeros(())
    return keras


@contextlib.contextmanager
def quiet_native_stderr():
    """Mute file descriptor 2 inside the block (unless KERASEQ_VERBOSE is set).

    For what may import TensorFlow under another backend, after `import_keras`:
    `keras.utils.set_random_seed` and `keras.layers.StringLookup` import it
    there, and TF 2.21 writes its C++ start-up lines straight to the file
    descriptor. Python exceptions propagate unchanged, after stderr is restored.
    """
    if os.environ.get("KERASEQ_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to mute
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)` (Python, numpy and the backend's
    generators), with the start-up lines of the TensorFlow it imports muted."""
    keras = import_keras()
    with quiet_native_stderr():
        keras.utils.set_random_seed(seed)

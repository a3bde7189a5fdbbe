"""keraseq: the classic path from recurrent networks to attention as Keras 3 layers.

Importing keraseq registers its layers with Keras (package "keraseq"), so
`keras.saving.load_model` can rebuild models that use them.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_keras_quietly():
    """Import Keras with native stderr muted, unless KERASEQ_VERBOSE is set.

    With the TensorFlow backend, TF 2.21 writes C++ start-up lines
    (`I0000 ... cudart_stub.cc`, oneDNN notes) straight to file descriptor 2,
    ignoring TF_CPP_MIN_LOG_LEVEL. They would bury the command line's one-line
    messages. Python exceptions raised by the import propagate unchanged, after
    stderr is restored.
    """
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in _sys.modules or _os.environ.get("KERASEQ_VERBOSE"):
        import keras  # noqa: F401
        return
    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to mute
        import keras  # noqa: F401
        return
    try:
        with open(_os.devnull, "w") as devnull:
            _os.dup2(devnull.fileno(), 2)
            import keras

            # The first op initialises the backend's devices; TensorFlow reports
            # a missing CUDA driver (`E0000 ... cuInit`) there, so do it now.
            keras.ops.zeros(())
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)


_import_keras_quietly()

from keraseq.layers import *  # noqa: E402,F401,F403
from keraseq.layers import __all__ as _layer_names  # noqa: E402
from keraseq import generation, models, text  # noqa: E402,F401

__all__ = list(_layer_names)

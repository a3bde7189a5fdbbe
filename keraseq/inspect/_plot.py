"""Shared plumbing of the inspection tools: matplotlib with the Agg backend, and
atomic writes (a temporary name in the same directory, then `os.replace`), so an
interrupted run never leaves a half-written PNG or JSON, nor replaces a good one."""

import json
import os
import tempfile
from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                         dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates the file 0600; give it the usual mode (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def save_figure(figure, path, dpi=120):
    """Write `figure` to `path` (PNG) atomically and close it."""
    plt = pyplot()
    try:
        return _atomic(path, lambda name: figure.savefig(name, format="png", dpi=dpi,
                                                         bbox_inches="tight"))
    finally:
        plt.close(figure)


def save_json(data, path):
    """Write `data` as indented JSON to `path` atomically."""
    def write(name):
        with open(name, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
    return _atomic(path, write)

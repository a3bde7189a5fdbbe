"""Shared plumbing of the inspection tools: matplotlib with the Agg backend, and
atomic writes through `keraseq._atomic` (a temporary name in the same directory,
fsync, then `os.replace`), so an interrupted run never leaves a half-written PNG
or JSON, nor replaces a good one."""

from pathlib import Path

from keraseq import _atomic


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _target(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(figure, path, dpi=120):
    """Write `figure` to `path` (PNG) atomically and close it. Returns `path`."""
    plt = pyplot()
    try:
        path = _target(path)
        with _atomic.atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=dpi, bbox_inches="tight")
        return path
    finally:
        plt.close(figure)


def save_json(data, path):
    """Write `data` as indented JSON to `path` atomically. Returns `path`."""
    path = _target(path)
    _atomic.write_json(path, data, indent=2, ensure_ascii=False)
    return path

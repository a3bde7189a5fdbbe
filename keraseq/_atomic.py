"""Atomic file writes: a file appears complete or not at all.

Every file keraseq writes (model, vocabulary, history / config / report JSON,
`.onnx` graphs, plots, the resume files of `keraseq train`) goes through this
module, the one implementation:

1. the content is written to a temporary file in the destination's directory
   (same file system, so the rename below is atomic), named
   `.<name>.<pid>.<random>.tmp<suffix>` (hidden, carrying the writer's process
   id, and ending in the destination's own
   suffix so that writers that check it, e.g. `model.save` wanting `.keras`,
   accept it);
2. the temporary file is flushed to disk (`fsync`) and given the mode a new
   file gets (`0o666 & ~umask`; `mkstemp` creates `0o600`);
3. it is renamed onto the destination (`os.replace`), and the directory entry
   is flushed (`fsync` of the directory, where the file system allows it).

If anything fails before the rename, including `KeyboardInterrupt` or another
`BaseException`, the temporary file is removed and the exception propagates:
an existing destination is left byte for byte as it was. Only a process killed
outright (SIGKILL, power loss) can leave a temporary file; its hidden
`.tmp` name never looks like a result, and `remove_stale_temporaries` removes
it later: the process id in the name tells whether its writer still runs.

No Keras, no TensorFlow: the command line, the library and the exporter all
import it.

Example:

```python
from keraseq import _atomic

_atomic.write_json("runs/x/config.json", {"units": 16}, indent=2)
with _atomic.atomic_path("runs/x/model.keras") as temporary:
    model.save(temporary)  # renamed onto model.keras only if save returns
```
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

__all__ = [
    "atomic_path",
    "discard",
    "fsync_directory",
    "new_file_mode",
    "publish",
    "publish_directory",
    "remove_stale_temporaries",
    "remove_temporaries",
    "temporary_directory",
    "temporary_path",
    "write_bytes",
    "write_json",
    "write_text",
]


def _umask():
    """The process umask, read from `/proc/self/status` where Linux provides it
    (no change to the umask, so safe with threads), else set and restored."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def new_file_mode():
    """The mode `open(path, "w")` gives a new file: `0o666 & ~umask`."""
    return 0o666 & ~_umask()


def temporary_path(path):
    """Create an empty temporary file next to `path` and return its name (str).

    The name is `.<basename>.<pid>.<random>.tmp<suffix of path>` in `path`'s
    directory (`pid`: this process's id, for `remove_stale_temporaries`). The caller writes it, then calls `publish` (rename onto `path`)
    or `discard`. `atomic_path` does both for the common case.

    Raises:
        OSError: the directory does not exist or is not writable.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1]
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=directory
    )
    os.close(handle)
    return temporary


def temporary_directory(directory, name):
    """Create an empty scratch directory `.<name>.<pid>.<random>.tmp` in
    `directory` and return its path (str); the caller removes it. A process
    killed outright leaves it to `remove_stale_temporaries`."""
    return tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp",
                            dir=os.fspath(directory))


def fsync_directory(directory):
    """Flush a directory's entries (a rename) to disk; a no-op where the file
    system or platform does not support it."""
    with contextlib.suppress(OSError, AttributeError):
        handle = os.open(os.fspath(directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _fsync_file(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def publish(temporary, path):
    """Rename the complete file `temporary` onto `path` atomically.

    `temporary` is flushed to disk and given the mode of a new file first; the
    rename is `os.replace` (an existing `path` is replaced in one step), then
    the directory entry is flushed. On failure `temporary` is removed and the
    error propagates, `path` unchanged.
    """
    temporary, path = os.fspath(temporary), os.fspath(path)
    try:
        _fsync_file(temporary)
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        discard(temporary)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))
    return path


def publish_directory(staging, path):
    """Rename the complete directory `staging` to `path` in one atomic step.

    `staging` (a `tempfile.mkdtemp` in `path`'s parent, whose files are
    complete) gets the mode of a new directory (`0o777 & ~umask`; mkdtemp makes
    `0o700`), every file in it is flushed to disk, then it is renamed: `path`
    is the whole directory or absent, never part of it. `path` must not exist
    or be an empty directory (POSIX `rename` replaces an empty one).

    Raises:
        OSError: `path` is a non-empty directory or a file, or the rename failed;
            `staging` is then left for the caller to remove.
    """
    staging, path = os.fspath(staging), os.fspath(path)
    for name in os.listdir(staging):
        if os.path.isfile(os.path.join(staging, name)):
            _fsync_file(os.path.join(staging, name))
    os.chmod(staging, 0o777 & ~_umask())
    os.rename(staging, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))
    return path


# What `temporary_path` and `temporary_directory` name:
# `.<name>.<pid>.<8 random characters>.tmp[<suffix>]`; names written before the
# process id was added (`.<name>.<random>.tmp[<suffix>]`) match too.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")
_WRITER = re.compile(r"^\..+\.([0-9]+)\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")


def remove_temporaries(directory):
    """Remove the temporary files (`temporary_path` names) that a process
    killed outright left in `directory`; returns their names. Only for a
    directory no other process is writing to (e.g. keraseq's own resume
    directory)."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if _TEMPORARY.match(name) and os.path.isfile(os.path.join(directory, name)):
            discard(os.path.join(directory, name))
            removed.append(name)
    return removed


def _running(pid):
    """Whether a process with this id runs on this machine (a process of
    another user counts: it runs)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but not ours, or cannot tell: keep its files
    return True


def remove_stale_temporaries(directory):
    """Remove the temporary files and scratch directories in `directory` whose
    writer no longer runs; returns their names, sorted.

    Safe while other processes write to `directory`: only names carrying a
    process id (`.<name>.<pid>.<random>.tmp...`, from `temporary_path` and
    `temporary_directory`) whose process has ended are removed. A process id
    is local to its machine (and PID namespace): for a directory that
    processes on other machines write to at the same time, use
    `remove_temporaries` only when none does. A missing `directory` is empty.
    """
    directory = os.fspath(directory)
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for name in sorted(os.listdir(directory)):
            match = _WRITER.match(name)
            if match is None or _running(int(match.group(1))):
                continue
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                discard(path)
            removed.append(name)
    return removed


def discard(temporary):
    """Remove a temporary file; nothing if it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.fspath(temporary))


@contextlib.contextmanager
def atomic_path(path):
    """Context manager yielding a temporary file name (str) to write `path` through.

    For writers that want a file name (`model.save`, `figure.savefig`,
    `onnx.save`): when the block ends normally the temporary file is published
    onto `path` (`publish`); when it raises anything (`KeyboardInterrupt`
    included) the temporary file is removed and `path` is left as it was.

    Example:

    ```python
    with atomic_path("model.keras") as temporary:
        model.save(temporary)
    ```
    """
    temporary = temporary_path(path)
    try:
        yield temporary
    except BaseException:
        discard(temporary)
        raise
    publish(temporary, path)


def write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically. Returns `path` (str)."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
    return os.fspath(path)


def write_text(path, text, encoding="utf-8"):
    """Write `text` to `path` atomically (UTF-8 by default). Returns `path`."""
    return write_bytes(path, text.encode(encoding))


def write_json(path, data, **dumps_kwargs):
    """Write `json.dumps(data, **dumps_kwargs)` and a newline to `path`
    atomically, UTF-8. The text is built before the file is touched, so data
    that cannot be serialized leaves nothing behind. Returns `path`."""
    return write_text(path, json.dumps(data, **dumps_kwargs) + "\n")

"""Atomic file writes: a file appears complete or not at all.

Every file keraseq writes (model, vocabulary, history / config / report JSON,
`.onnx` graphs, plots, the resume files of `keraseq train`) goes through this
module, the one implementation:

1. the content is written to a temporary file in the destination's directory
   (same file system, so the rename below is atomic), named
   `.<name>.<writer>.<random>.tmp<suffix>` (hidden, naming its writer
   `<pid>-<space>`, and ending in the destination's own
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
it later: the writer in the name tells whether the process that wrote it still
runs (`<pid>` is its process id, `<space>` 8 hex digits naming the machine and
PID namespace the id belongs to, so that a process of another container or
machine writing to a shared directory is never taken for an ended one).

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
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile

__all__ = [
    "atomic_path",
    "check_destination",
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

    The name is `.<basename>.<pid>-<space>.<random>.tmp<suffix of path>` in
    `path`'s directory (this process's id and `_space()`, for
    `remove_stale_temporaries`). The caller writes it, then calls `publish` (rename onto `path`)
    or `discard`. `atomic_path` does both for the common case.

    Raises:
        OSError: the directory does not exist or is not writable;
            `IsADirectoryError` when `path` is a directory or ends in a
            separator (checked before anything is written).
    """
    path = os.fspath(path)
    check_destination(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1]
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.{_writer()}.", suffix=f".tmp{suffix}", dir=directory
    )
    os.close(handle)
    return temporary


def temporary_directory(directory, name):
    """Create an empty scratch directory `.<name>.<pid>-<space>.<random>.tmp`
    in `directory` and return its path (str); the caller removes it. A process
    killed outright leaves it to `remove_stale_temporaries` (pass `name` in its
    `scratch`)."""
    return tempfile.mkdtemp(prefix=f".{name}.{_writer()}.", suffix=".tmp",
                            dir=os.fspath(directory))


def check_destination(path):
    """Raise the `OSError` that writing a file to `path` would end in, before
    anything is written or computed: `IsADirectoryError` for a directory (or a
    path ending in a separator), `FileNotFoundError` / `NotADirectoryError`
    for a parent directory that does not exist or is a file,
    `PermissionError` for one that is not writable. Returns `path` (str)."""
    path = os.fspath(path)
    if not os.path.basename(path) or os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(directory):
        raise FileNotFoundError(errno.ENOENT, "No such directory", directory)
    if not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Directory not writable", directory)
    return path


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
# `.<name>.<writer>.<8 random characters>.tmp[<suffix>]` (the random part is
# mkstemp's: lower-case letters, digits, `_`). Names written before the writer
# was added (`.<name>.<random>.tmp[<suffix>]`) match `_TEMPORARY` too.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")
_WRITTEN_BY = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})-(?P<space>[0-9a-f]{8})\.[a-z0-9_]{8}"
    r"\.tmp(?P<suffix>\.[^.]+)?$"
)


def _space():
    """8 hex digits naming this machine (host name) and PID namespace: a
    process id means the same process only where both are the same."""
    namespace = ""
    with contextlib.suppress(OSError):
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def _writer():
    """`<pid>-<space>`: this process, as the temporary names record it."""
    return f"{os.getpid()}-{_space()}"


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
    """Whether a process with this id runs (in this PID namespace); a process
    of another user counts: it runs."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but not ours, or cannot tell: keep its files
    return True


def remove_stale_temporaries(directory, files=(), scratch=()):
    """Remove what a keraseq process killed outright left in `directory`: the
    temporary files of the destinations `files` and the scratch directories
    `scratch`, whose writer has ended. Returns the names removed, sorted.

    Removed are only entries named `.<name>.<pid>-<space>.<random>.tmp...`
    (by `temporary_path` / `temporary_directory`) where:

    - `<name>` is one of `files` (base names such as `"model.onnx"`; the entry
      a regular file, not a link, ending in `.tmp` plus that name's suffix) or
      one of `scratch` (the entry a directory, not a link, ending in `.tmp`);
    - `<space>` is this machine's and PID namespace's: a process id of another
      container or machine sharing `directory` cannot be checked, so its files
      are kept;
    - no process `<pid>` runs.

    So a user's own hidden files are never touched, nor what another keraseq
    process still running is writing. A missing `directory` is empty.

    Args:
        directory: str or path-like.
        files: iterable of str, default `()`. Base names of the files keraseq
            writes in `directory`.
        scratch: iterable of str, default `()`. Names given to
            `temporary_directory` for `directory`.
    """
    directory = os.fspath(directory)
    files, scratch = set(files), set(scratch)
    space = _space()
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in sorted(os.listdir(directory)):
            match = _WRITTEN_BY.match(entry)
            if match is None or match["space"] != space or _running(int(match["pid"])):
                continue
            path = os.path.join(directory, entry)
            name, suffix = match["name"], match["suffix"] or ""
            if os.path.islink(path):
                continue
            if (name in files and suffix == os.path.splitext(name)[1]
                    and os.path.isfile(path)):
                discard(path)
            elif name in scratch and not suffix and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                continue
            removed.append(entry)
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

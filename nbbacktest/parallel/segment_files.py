"""Segment files on disk: where they live, how they are written, and the stale ones removed.

A segment is a plain file, in ``/dev/shm`` where the host has it
(:func:`segment_dir`), holding the arrays a :class:`~nbbacktest.parallel.segment_layout.Layout`
describes. :func:`write_segment` writes one atomically; a file is named
``nbbacktest-<pid>-<key>`` after the process that owns it, so that
:func:`remove_stale_segments` can delete the files of processes that are gone.
Mapping the files into frames and owning them is :mod:`nbbacktest.parallel.shared`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nbbacktest.parallel.segment_layout import Layout, check_arrays

__all__ = [
    "SEGMENT_PREFIX",
    "SHM_DIR_ENV",
    "remote_segment_name",
    "remove_stale_segments",
    "segment_dir",
    "write_segment",
]

#: The start of every segment file's name.
SEGMENT_PREFIX = "nbbacktest-"
#: The environment variable that overrides :func:`segment_dir`.
SHM_DIR_ENV = "NBBACKTEST_SHM_DIR"

# a single huge write() is several times slower than a loop of these
_WRITE_CHUNK = 8 << 20
_NAME_RE = re.compile(rf"^{re.escape(SEGMENT_PREFIX)}(\d+)-")


def segment_dir() -> Path:
    """The directory segments are written to.

    Returns
    -------
    pathlib.Path
        ``$NBBACKTEST_SHM_DIR`` when set; else ``/dev/shm`` when it exists and
        is writable (memory, shared by every process of the host); else
        :func:`tempfile.gettempdir`.

    Examples
    --------
    >>> segment_dir().is_dir()
    True
    """
    override = os.environ.get(SHM_DIR_ENV)
    if override:
        return Path(override)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


# -------------------------------------------------------------------- writing


def _write_all(file: Any, data: memoryview) -> None:
    while len(data):
        written = file.write(data)
        data = data[written:]


def write_segment(
    layout: Layout, arrays: Sequence[np.ndarray], path: str | os.PathLike[str]
) -> None:
    """Write arrays into a segment file, atomically.

    The file is written under a temporary name in the same directory and
    renamed to ``path`` when complete, so a reader never sees a half-written
    segment; an existing ``path`` is replaced.

    Parameters
    ----------
    layout : Layout
        From :func:`layout_of`.
    arrays : sequence of numpy.ndarray
        The arrays :func:`layout_of` returned, or copies of them received
        over the network, in the same order.
    path : str or os.PathLike
        The segment file to create.

    Raises
    ------
    ValueError
        The arrays do not match the layout.
    OSError
        The directory lacks the space (``ENOSPC``) or cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> import nbbacktest as nbb
    >>> from nbbacktest.parallel.segment_layout import layout_of
    >>> layout, arrays = layout_of(nbb.load_sample("daily"))
    >>> path = os.path.join(tempfile.mkdtemp(), "segment")
    >>> write_segment(layout, arrays, path)
    >>> os.path.getsize(path) == layout.nbytes
    True
    >>> os.remove(path)
    """
    arrays = check_arrays(layout, arrays)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(directory).free
    if free < layout.nbytes:
        raise OSError(
            errno.ENOSPC,
            f"{directory} has {free / 2**20:.0f} MiB free but the segment needs "
            f"{layout.nbytes / 2**20:.0f} MiB; free some space, enlarge it, or "
            f"point ${SHM_DIR_ENV} at a larger local directory",
            path,
        )
    # a name of its own per writer: two processes writing the same segment
    # must not truncate each other's temporary file
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb", buffering=0) as file:
            position = 0
            for (offset, _, _), array in zip(layout.slots(), arrays):
                if offset > position:
                    _write_all(file, memoryview(bytes(offset - position)))
                raw = array.view(np.uint8).data  # a memoryview of the bytes
                for start in range(0, len(raw), _WRITE_CHUNK):
                    _write_all(file, raw[start : start + _WRITE_CHUNK])
                position = offset + len(raw)
            if layout.nbytes > position:
                _write_all(file, memoryview(bytes(layout.nbytes - position)))
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remote_segment_name(key: str) -> str:
    """The name of the segment of data ``key`` that an engine writes on another host.

    A file name, resolved in each host's own :func:`segment_dir`; named after the data,
    not a pid, so every engine of that host finds the same file.

    Examples
    --------
    >>> remote_segment_name("abc")
    'nbbacktest-remote-abc'
    """
    return f"{SEGMENT_PREFIX}remote-{key}"


# -------------------------------------------------------------------- stale files


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_segments(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete segments left behind by processes that are no longer running.

    A segment file is named ``nbbacktest-<pid>-<key>`` after the process
    that created it; when that process crashed (or was killed), its files
    stay in memory until removed. Files of live processes are never touched.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Where to look; default :func:`segment_dir`.

    Returns
    -------
    list of pathlib.Path
        The files removed.

    Notes
    -----
    Process ids are checked on this host: never run it on a directory that
    several hosts share.

    Examples
    --------
    >>> import tempfile
    >>> remove_stale_segments(tempfile.mkdtemp())
    []
    """
    directory = Path(directory) if directory is not None else segment_dir()
    removed = []
    own = os.getpid()
    alive: dict[int, bool] = {}
    for entry in os.scandir(directory):
        match = _NAME_RE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == own:
            continue
        if pid not in alive:
            alive[pid] = _pid_alive(pid)
        if alive[pid]:
            continue
        path = Path(entry.path)
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # another process removed it first
        removed.append(path)
    return removed

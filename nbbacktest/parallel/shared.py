"""Market data shared once per host through memory-mapped segment files.

The client writes a validated frame (or universe) once into a *segment*, a
plain file in ``/dev/shm``; every engine on the same host memory-maps it
read-only and builds zero-copy DataFrames over it, so N engines add almost
nothing to the host's memory. Engines on other hosts receive the arrays once
(numpy arrays travel zero-copy through ipyparallel) and one engine per host
writes that host's segment with :func:`~nbbacktest.parallel.segment_files.write_segment`
(or :meth:`Segment.from_arrays`).

Attached frames are read-only: ``frame.loc[t, "Close"] = 1.0`` raises
``ValueError: assignment destination is read-only``. Adding a column, or
``frame.copy()``, works as usual.

This module maps segments (:func:`attach`, :func:`detach`) and owns the ones this
process wrote (:class:`Segment`, removed at exit). The rest lives below it:

* :mod:`nbbacktest.parallel.segment_layout`: where each array goes in a segment
  (:class:`~nbbacktest.parallel.segment_layout.Layout`), and frames rebuilt from arrays;
* :mod:`nbbacktest.parallel.segment_files`: the segment directory, atomic writes,
  and the removal of segments whose process is gone;
* :mod:`nbbacktest.parallel.fingerprint`: the content hash that names a segment.

Everything here needs only the standard library, numpy and pandas, so it runs
the same in the client, in an engine and in a test.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nbbacktest.errors import DataError

# fingerprint is imported from here by nbbacktest.parallel.sweep and tests/test_sweep.py;
# its home is nbbacktest.parallel.fingerprint.
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.segment_files import (
    SEGMENT_PREFIX,
    remove_stale_segments,
    segment_dir,
    write_segment,
)
from nbbacktest.parallel.segment_layout import Data, Layout, build_frames, layout_of

__all__ = [
    "Segment",
    "attach",
    "detach",
    # defined below this module, used here, and imported from here by the worker and the
    # sweep: SEGMENT_PREFIX, segment_dir, write_segment; fingerprint (see above)
    "SEGMENT_PREFIX",
    "fingerprint",
    "segment_dir",
    "write_segment",
]

_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# ------------------------------------------------------------------ attaching

_MAPS: dict[str, np.memmap] = {}
_MAPS_LOCK = threading.Lock()


def _map(path: str, nbytes: int) -> np.memmap:
    with _MAPS_LOCK:
        mapped = _MAPS.get(path)
        if mapped is None:
            mapped = np.memmap(path, dtype=np.uint8, mode="r")
            _MAPS[path] = mapped
    if mapped.size < nbytes:
        raise DataError(
            f"segment {path} holds {mapped.size} bytes but its layout needs "
            f"{nbytes}; it was not written for this layout"
        )
    return mapped


def _views(mapped: np.memmap, layout: Layout) -> list[np.ndarray]:
    views = []
    for offset, dtype, count in layout.slots():
        if count:
            views.append(np.frombuffer(mapped, dtype=dtype, count=count, offset=offset))
        else:
            empty = np.empty(0, dtype=dtype)
            empty.flags.writeable = False
            views.append(empty)
    return views


def attach(path: str | os.PathLike[str], layout: Layout) -> Data:
    """Frames over a segment file, without copying its data.

    The file is memory-mapped read-only once per process and path; every
    frame built from it shares that mapping, and the pages are shared with
    every other process of the host that maps the same file.

    Parameters
    ----------
    path : str or os.PathLike
        A segment written by :func:`write_segment` or :meth:`Segment.create`.
    layout : Layout
        The layout it was written with.

    Returns
    -------
    pandas.DataFrame or dict of str to pandas.DataFrame
        Equal to the frame or universe the layout was made from; a dict in
        the universe's order. The numeric columns and the index are
        read-only views of the mapping.

    Raises
    ------
    FileNotFoundError
        No segment at ``path``.
    DataError
        The file is smaller than the layout says.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.parallel.fingerprint import fingerprint
    >>> data = nbb.load_sample("daily")
    >>> with Segment.create(data, fingerprint(data)) as segment:
    ...     shared = attach(segment.path, segment.layout)
    ...     print(shared.equals(data), shared["Close"].to_numpy().flags.writeable)
    True False
    """
    path = os.fspath(path)
    mapped = _map(path, layout.nbytes)
    return build_frames(layout, _views(mapped, layout))


def detach(path: str | os.PathLike[str]) -> None:
    """Forget this process's mapping of a segment.

    Frames already attached keep the mapping alive until they are garbage;
    the next :func:`attach` maps the file again. Does nothing when the path
    is not mapped.

    Parameters
    ----------
    path : str or os.PathLike
        The segment's path, as given to :func:`attach`.

    Examples
    --------
    >>> detach("/no/such/segment")
    """
    with _MAPS_LOCK:
        _MAPS.pop(os.fspath(path), None)



# -------------------------------------------------------------------- owning

_LIVE: dict[str, Segment] = {}
_LIVE_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False
_SWEPT: set[str] = set()


class Segment:
    """A segment file owned by this process, removed when it exits.

    Create one with :meth:`create` (from data) or :meth:`from_arrays` (from
    arrays received over the network). Every segment still live when the
    interpreter exits normally is unlinked by an ``atexit`` hook; the files
    of a process that crashed are removed by :func:`remove_stale_segments`,
    which the first :meth:`create` of each process runs.

    Attributes
    ----------
    path : pathlib.Path
        The segment file, ``<segment_dir()>/nbbacktest-<pid>-<key>``.
    layout : Layout
        What :func:`attach` needs besides the path.
    key : str
        The data's fingerprint.
    nbytes : int
        Size of the file in bytes.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.parallel.fingerprint import fingerprint
    >>> data = nbb.load_sample("universe")
    >>> segment = Segment.create(data, fingerprint(data))
    >>> shared = attach(segment.path, segment.layout)
    >>> shared["BBB"].equals(data["BBB"])
    True
    >>> segment.unlink()
    >>> segment.path.exists()
    False
    """

    def __init__(self, path: Path, layout: Layout, key: str) -> None:
        self.path = path
        self.layout = layout
        self.key = key
        self._owner = os.getpid()

    @property
    def nbytes(self) -> int:
        """Size of the segment file in bytes."""
        return self.layout.nbytes

    @classmethod
    def create(cls, data: Data, key: str) -> Segment:
        """Write ``data`` once into a new segment.

        Parameters
        ----------
        data : pandas.DataFrame or Mapping of str to pandas.DataFrame
            Frames with a DatetimeIndex.
        key : str
            The data's :func:`fingerprint`; it names the file. When this
            process already holds a live segment under that name, that
            segment is returned and nothing is written.

        Returns
        -------
        Segment

        Raises
        ------
        ValueError
            ``key`` holds characters other than letters, digits, ``_.-``.
        OSError
            The segment directory lacks the space.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.parallel.fingerprint import fingerprint
        >>> data = nbb.load_sample("daily")
        >>> with Segment.create(data, fingerprint(data)) as segment:
        ...     print(segment.nbytes >= data.to_numpy().nbytes)  # every column and the index
        True
        """
        layout, arrays = layout_of(data)
        return cls.from_arrays(layout, arrays, key)

    @classmethod
    def from_arrays(cls, layout: Layout, arrays: Sequence[np.ndarray], key: str) -> Segment:
        """Write arrays received over the network into a new segment.

        What an engine on a host without a segment does, so that the host's
        other engines can :func:`attach` it; the engine's process owns the
        file. See :meth:`create` for ``key`` and the errors raised.

        Parameters
        ----------
        layout : Layout
            From :func:`layout_of`.
        arrays : sequence of numpy.ndarray
            The arrays :func:`layout_of` returned (or copies), in order.
        key : str
            The data's :func:`fingerprint`.

        Returns
        -------
        Segment

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.parallel.fingerprint import fingerprint
        >>> data = nbb.load_sample("daily")
        >>> layout, arrays = layout_of(data)
        >>> with Segment.from_arrays(layout, arrays, fingerprint(data)) as s:
        ...     print(attach(s.path, s.layout).equals(data))
        True
        """
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(
                f"key must be letters, digits, '_', '.' or '-' (a fingerprint), got {key!r}"
            )
        directory = segment_dir()
        _sweep_once(directory)
        path = directory / f"{SEGMENT_PREFIX}{os.getpid()}-{key}"
        with _LIVE_LOCK:
            live = _LIVE.get(str(path))
        if live is not None and live._owner == os.getpid() and path.exists():
            return live
        write_segment(layout, arrays, path)
        segment = cls(path, layout, key)
        with _LIVE_LOCK:
            _LIVE[str(path)] = segment
        _register_atexit()
        return segment

    def unlink(self) -> None:
        """Remove the file and this process's mapping of it; idempotent.

        Engines that attached it keep their mapping (and the memory) until
        they drop their frames and :func:`detach`.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.parallel.fingerprint import fingerprint
        >>> data = nbb.load_sample("daily")
        >>> segment = Segment.create(data, fingerprint(data))
        >>> segment.unlink(); segment.unlink()
        >>> segment.path.exists()
        False
        """
        with _LIVE_LOCK:
            if _LIVE.get(str(self.path)) is self:
                del _LIVE[str(self.path)]
        detach(self.path)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlink()

    def __repr__(self) -> str:
        return f"Segment({str(self.path)!r}, {self.nbytes / 2**20:.1f} MiB)"


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    with _LIVE_LOCK:
        if _ATEXIT_REGISTERED:
            return
        _ATEXIT_REGISTERED = True
    atexit.register(_unlink_all)


def _unlink_all() -> None:
    """Unlink every live segment this process created."""
    with _LIVE_LOCK:
        segments = list(_LIVE.values())
    pid = os.getpid()
    for segment in segments:
        # a forked child inherits the registry and the hook: the files are
        # its parent's, not its own
        if segment._owner == pid:
            try:
                segment.unlink()
            except OSError:
                pass


def _sweep_once(directory: Path) -> None:
    key = str(directory)
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    try:
        remove_stale_segments(directory)
    except OSError:
        pass  # housekeeping must never stop a sweep

"""Market data shared once per host through memory-mapped segment files.

The client writes a validated frame (or universe) once into a *segment*, a
plain file in ``/dev/shm``; every engine on the same host memory-maps it
read-only and builds zero-copy DataFrames over it, so N engines add almost
nothing to the host's memory. Engines on other hosts receive the arrays once
(numpy arrays travel zero-copy through ipyparallel) and one engine per host
writes that host's segment with :func:`write_segment` (or
:meth:`Segment.from_arrays`).

A segment holds, 64-byte aligned, each frame's index (int64, in the index's
own unit) and every numeric column (bool, int, uint, float, complex,
datetime64 and timedelta64 of any width) as its raw bytes. Where each array
lives is described by a small picklable :class:`Layout`, which travels with
the tasks. Columns that cannot be memory-mapped (object, str, categorical,
nullable and other extension dtypes) are pickled into a side blob inside the
layout: they are rare in market data, and each engine then holds its own copy
of them.

Attached frames are read-only: ``frame.loc[t, "Close"] = 1.0`` raises
``ValueError: assignment destination is read-only``. Adding a column, or
``frame.copy()``, works as usual.

Everything here needs only the standard library, numpy and pandas, so it runs
the same in the client, in an engine and in a test.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import os
import pickle
import re
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from nbbacktest.errors import DataError

__all__ = [
    "SEGMENT_PREFIX",
    "ColumnLayout",
    "FrameLayout",
    "Layout",
    "Segment",
    "attach",
    "detach",
    "fingerprint",
    "frames_from_arrays",
    "layout_of",
    "remove_stale_segments",
    "segment_dir",
    "write_segment",
]

SEGMENT_PREFIX = "nbbacktest-"
SHM_DIR_ENV = "NBBACKTEST_SHM_DIR"

Data = Union[pd.DataFrame, Mapping[str, pd.DataFrame]]

_ALIGN = 64
# a single huge write() is several times slower than a loop of these
_WRITE_CHUNK = 8 << 20
# fingerprint chunk: fixed, so the same data always gives the same digest
_HASH_CHUNK = 8 << 20
# below this many bytes a thread pool costs more than it saves
_PARALLEL_HASH_BYTES = 64 << 20
# numpy dtype kinds stored as raw bytes: bool, int, uint, float, complex, m8, M8
_MAPPED_KINDS = "biufcmM"
_NAME_RE = re.compile(rf"^{re.escape(SEGMENT_PREFIX)}(\d+)-")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------- layout


@dataclass(frozen=True)
class ColumnLayout:
    """Where one column lives in a segment.

    Attributes
    ----------
    name : Hashable
        The column label.
    dtype : str
        The numpy dtype string (``"<f8"``, ``"|b1"``, ``"<M8[ns]"`` ...) of a
        memory-mapped column; ``""`` for a column pickled into the layout.
    offset : int
        Byte offset of the column's data in the segment; ``-1`` when pickled.
    """

    name: Hashable
    dtype: str
    offset: int

    @property
    def mapped(self) -> bool:
        """Whether the column is stored in the segment (else it is pickled)."""
        return self.offset >= 0


@dataclass(frozen=True)
class FrameLayout:
    """Where one frame's index and columns live in a segment.

    Attributes
    ----------
    symbol : str or None
        The symbol in a universe; None for a single frame.
    nrows : int
        Number of rows.
    index_offset : int
        Byte offset of the index, stored as int64 (UTC) in ``unit``.
    unit : str
        Resolution of the index: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``.
    tz : str, datetime.tzinfo or None
        The index's time zone: its name when the name rebuilds an equal time
        zone (``"UTC"``, ``"America/New_York"``), else the tzinfo object
        itself; None for a naive index.
    index_name : Hashable
        The index's name.
    freq : str or None
        The index's frequency string (``"D"``, ``"B"``, ...), if it has one.
    columns : tuple of ColumnLayout
        The columns in the frame's order.
    columns_name : Hashable
        The name of the frame's columns Index.
    columns_dtype : str
        The dtype of the frame's columns Index (``"str"``, ``"object"``, ...).
    pickled : bytes
        Pickle of ``{position: values}`` for the columns not stored in the
        segment (object, str, extension dtypes); ``b""`` when there are none.
    """

    symbol: str | None
    nrows: int
    index_offset: int
    unit: str
    tz: str | tzinfo | None
    index_name: Hashable
    freq: str | None
    columns: tuple[ColumnLayout, ...]
    columns_name: Hashable
    columns_dtype: str
    pickled: bytes


@dataclass(frozen=True)
class Layout:
    """A small, picklable description of where every array lives in a segment.

    Built by :func:`layout_of`; sent to the engines with each task so that
    :func:`attach` and :func:`frames_from_arrays` can rebuild the frames.

    Attributes
    ----------
    frames : tuple of FrameLayout
        One per frame, in the universe's order (one for a single frame).
    universe : bool
        Whether the data is a universe ``{symbol: DataFrame}``.
    nbytes : int
        Size of the segment file in bytes.

    Examples
    --------
    >>> import pickle
    >>> import nbbacktest as nbb
    >>> layout, arrays = layout_of(nbb.load_sample("daily"))
    >>> layout.universe, layout.frames[0].nrows, len(arrays)
    (False, 2500, 6)
    >>> pickle.loads(pickle.dumps(layout)) == layout
    True
    """

    frames: tuple[FrameLayout, ...]
    universe: bool
    nbytes: int

    def slots(self) -> Iterator[tuple[int, np.dtype[Any], int]]:
        """``(offset, dtype, count)`` of every stored array, in layout order.

        The dtype is the one the array has in :func:`layout_of`'s list: int64
        for the index and for datetime64/timedelta64 columns.
        """
        for frame in self.frames:
            yield frame.index_offset, _I8, frame.nrows
            for col in frame.columns:
                if col.mapped:
                    yield col.offset, _wire_dtype(np.dtype(col.dtype)), frame.nrows


_I8 = np.dtype(np.int64)


def _wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    # datetime64 has no buffer format: memoryview() and ipyparallel's
    # zero-copy path refuse it, its int64 view travels fine
    return _I8 if dtype.kind in "mM" else dtype


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _tz_field(tz: tzinfo, unit: str) -> str | tzinfo:
    """The tz's name when the name rebuilds an equal dtype, else the tz."""
    name = str(tz)
    try:
        if pd.DatetimeTZDtype(unit, name) == pd.DatetimeTZDtype(unit, tz):
            return name
    except (ValueError, TypeError, KeyError):
        pass
    return tz  # e.g. a fixed offset whose str() no parser reads back


def _frame_layout(
    frame: pd.DataFrame, symbol: str | None, offset: int, arrays: list[np.ndarray]
) -> tuple[FrameLayout, int]:
    """Describe one frame from ``offset`` on; append its arrays to ``arrays``."""
    where = "data" if symbol is None else f"data[{symbol!r}]"
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where} must be a pandas DataFrame, got {type(frame).__name__}")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(
            f"{where} must have a DatetimeIndex, got {type(index).__name__}; "
            "validate it first with nbb.load_ohlcv(data)"
        )
    if isinstance(frame.columns, pd.MultiIndex):
        raise DataError(
            f"{where} has MultiIndex columns, which cannot be shared; flatten "
            "them, e.g. `df.columns = ['_'.join(map(str, c)) for c in df.columns]`"
        )
    nrows = len(frame)
    unit = index.unit
    tz = None if index.tz is None else _tz_field(index.tz, unit)
    index_offset = offset
    arrays.append(np.ascontiguousarray(index.asi8))  # UTC, int64 in `unit`
    offset = _align(offset + nrows * 8)
    columns: list[ColumnLayout] = []
    pickled: dict[int, Any] = {}
    for position, (name, series) in enumerate(frame.items()):  # by position: names may repeat
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in _MAPPED_KINDS:
            values = np.ascontiguousarray(series.to_numpy())  # a view when contiguous
            arrays.append(values.view(_wire_dtype(dtype)))
            columns.append(ColumnLayout(name, dtype.str, offset))
            offset = _align(offset + values.nbytes)
        else:
            # object, str and extension arrays cannot be memory-mapped; the
            # ndarray for object keeps pandas from inferring a str dtype back
            values = series.to_numpy() if isinstance(dtype, np.dtype) else series.array
            pickled[position] = values
            columns.append(ColumnLayout(name, "", -1))
    layout = FrameLayout(
        symbol=symbol,
        nrows=nrows,
        index_offset=index_offset,
        unit=unit,
        tz=tz,
        index_name=index.name,
        freq=index.freqstr,
        columns=tuple(columns),
        columns_name=frame.columns.name,
        columns_dtype=str(frame.columns.dtype),
        pickled=pickle.dumps(pickled, protocol=5) if pickled else b"",
    )
    return layout, offset


def layout_of(data: Data) -> tuple[Layout, list[np.ndarray]]:
    """Describe a frame or universe as a :class:`Layout` and a list of arrays.

    Parameters
    ----------
    data : pandas.DataFrame or Mapping of str to pandas.DataFrame
        Frames with a DatetimeIndex, such as :func:`nbbacktest.load_ohlcv`
        returns.

    Returns
    -------
    layout : Layout
        Where every array goes in a segment.
    arrays : list of numpy.ndarray
        The arrays in layout order (see :meth:`Layout.slots`), C-contiguous:
        per frame the index as int64 (UTC, in the index's unit), then each
        numeric column (datetime64 and timedelta64 viewed as int64). These are
        views of ``data`` (no copy) when its columns are contiguous, as a
        validated frame's are; send them to hosts that need a segment.

    Raises
    ------
    TypeError
        A frame is not a DataFrame or has no DatetimeIndex.
    DataError
        A frame has MultiIndex columns.

    Examples
    --------
    >>> import numpy as np
    >>> import nbbacktest as nbb
    >>> data = nbb.load_sample("daily")
    >>> layout, arrays = layout_of(data)
    >>> [c.name for c in layout.frames[0].columns]
    ['Open', 'High', 'Low', 'Close', 'Volume']
    >>> np.shares_memory(arrays[1], data["Open"].to_numpy())
    True
    """
    arrays: list[np.ndarray] = []
    frames: list[FrameLayout] = []
    offset = 0
    if isinstance(data, pd.DataFrame):
        frame_layout, offset = _frame_layout(data, None, offset, arrays)
        frames.append(frame_layout)
        universe = False
    elif isinstance(data, Mapping):
        for symbol, frame in data.items():
            frame_layout, offset = _frame_layout(frame, symbol, offset, arrays)
            frames.append(frame_layout)
        universe = True
    else:
        raise TypeError(
            "data must be a pandas DataFrame or a mapping {symbol: DataFrame}, "
            f"got {type(data).__name__}"
        )
    # mmap refuses an empty file: keep at least one aligned block
    return Layout(tuple(frames), universe, max(offset, _ALIGN)), arrays


# ---------------------------------------------------------------- fingerprint


def _chunks(arrays: Sequence[np.ndarray]) -> list[memoryview]:
    out = []
    for array in arrays:
        raw = memoryview(array.reshape(-1).view(np.uint8))
        out.extend(raw[i : i + _HASH_CHUNK] for i in range(0, len(raw), _HASH_CHUNK))
    return out


def _checksum(chunk: memoryview) -> bytes:
    # crc32 is position sensitive; the wrapping sum of 64-bit words catches
    # every single-word change crc32 might miss. Both release the GIL.
    words = np.frombuffer(chunk, dtype=np.uint64, count=len(chunk) // 8)
    total = int(words.sum(dtype=np.uint64)) if len(words) else 0
    return struct.pack("<IQ", zlib.crc32(chunk), total)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _metadata(layout: Layout) -> bytes:
    # repr of built-in values is stable across processes, unlike hash()
    frames = tuple(
        (
            f.symbol,
            f.nrows,
            f.unit,
            None if f.tz is None else str(f.tz),
            f.index_name,
            f.freq,
            f.columns_name,
            f.columns_dtype,
            tuple((c.name, c.dtype) for c in f.columns),
            hashlib.blake2b(f.pickled, digest_size=16).hexdigest(),
        )
        for f in layout.frames
    )
    return repr((layout.universe, frames)).encode()


def fingerprint(data: Data) -> str:
    """A content hash of a frame or universe.

    Covers the index values, unit, time zone, name and frequency, the column
    names, order and dtypes, every column's bytes, and the symbols and their
    order. The same data gives the same fingerprint in any process; changing
    any of these gives a different one.

    Parameters
    ----------
    data : pandas.DataFrame or Mapping of str to pandas.DataFrame
        Frames with a DatetimeIndex.

    Returns
    -------
    str
        20 hexadecimal characters.

    Notes
    -----
    Each array is checksummed in fixed 8 MiB chunks (crc32 and a wrapping
    sum of 64-bit words, about 0.2 s per GiB on two cores, in parallel
    threads), and the checksums and metadata are digested with blake2b. It
    detects changes, not attacks: it is not a cryptographic hash of the data.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> data = nbb.load_sample("daily")
    >>> key = fingerprint(data)
    >>> len(key), key == fingerprint(data.copy())
    (20, True)
    >>> key == fingerprint(data.rename(columns={"Volume": "Vol"}))
    False
    """
    layout, arrays = layout_of(data)
    digest = hashlib.blake2b(_metadata(layout), digest_size=10)
    chunks = _chunks(arrays)
    total = sum(len(c) for c in chunks)
    workers = min(_cpu_count(), 8, len(chunks))
    if total >= _PARALLEL_HASH_BYTES and workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="nbb-fingerprint") as pool:
            sums = list(pool.map(_checksum, chunks))
    else:
        sums = [_checksum(c) for c in chunks]
    # chunk boundaries are fixed and array sizes are in the metadata, so the
    # concatenated checksums identify the bytes of every array
    digest.update(b"".join(sums))
    return digest.hexdigest()


# -------------------------------------------------------------------- writing


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


def _check_arrays(layout: Layout, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The arrays, C-contiguous with the layout's dtypes; raise on a mismatch."""
    slots = list(layout.slots())
    if len(arrays) != len(slots):
        raise ValueError(
            f"the layout describes {len(slots)} arrays but {len(arrays)} were "
            "given; pass the arrays layout_of() returned with this layout"
        )
    out = []
    for i, ((_, dtype, count), array) in enumerate(zip(slots, arrays)):
        array = np.asarray(array)
        if array.dtype != dtype and array.dtype.kind in "mM" and dtype == _I8:
            array = array.view(_I8)
        if array.dtype != dtype or array.shape != (count,):
            raise ValueError(
                f"array {i} is {array.dtype} of shape {array.shape} but the "
                f"layout expects {dtype} of shape ({count},); pass the arrays "
                "layout_of() returned with this layout, in the same order"
            )
        out.append(np.ascontiguousarray(array))
    return out


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
    >>> layout, arrays = layout_of(nbb.load_sample("daily"))
    >>> path = os.path.join(tempfile.mkdtemp(), "segment")
    >>> write_segment(layout, arrays, path)
    >>> os.path.getsize(path) == layout.nbytes
    True
    >>> os.remove(path)
    """
    arrays = _check_arrays(layout, arrays)
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
                raw = memoryview(array.view(np.uint8))
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
    >>> data = nbb.load_sample("daily")
    >>> with Segment.create(data, fingerprint(data)) as segment:
    ...     shared = attach(segment.path, segment.layout)
    ...     print(shared.equals(data), shared["Close"].to_numpy().flags.writeable)
    True False
    """
    path = os.fspath(path)
    mapped = _map(path, layout.nbytes)
    return _build(layout, _views(mapped, layout))


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


def frames_from_arrays(layout: Layout, arrays: Sequence[np.ndarray]) -> Data:
    """Frames over arrays received over the network, without a file.

    An engine on a host that has no segment yet rebuilds the data from the
    arrays it received, then may write them with :func:`write_segment` for
    the other engines of its host.

    Parameters
    ----------
    layout : Layout
        From :func:`layout_of`.
    arrays : sequence of numpy.ndarray
        The arrays :func:`layout_of` returned (or copies), in the same order.
        The frames are built over them without copying.

    Returns
    -------
    pandas.DataFrame or dict of str to pandas.DataFrame
        Equal to the data the layout was made from.

    Raises
    ------
    ValueError
        The arrays do not match the layout.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> data = nbb.load_sample("universe")
    >>> layout, arrays = layout_of(data)
    >>> rebuilt = frames_from_arrays(layout, [a.copy() for a in arrays])
    >>> list(rebuilt) == list(data), rebuilt["AAA"].equals(data["AAA"])
    (True, True)
    """
    return _build(layout, _check_arrays(layout, arrays))


def _index(values: np.ndarray, frame: FrameLayout) -> pd.DatetimeIndex:
    datetimes = values.view(f"M8[{frame.unit}]")
    freq = None if frame.freq is None else pd.tseries.frequencies.to_offset(frame.freq)
    try:
        from pandas.core.arrays import DatetimeArray

        dtype = (
            datetimes.dtype
            if frame.tz is None
            else pd.DatetimeTZDtype(frame.unit, frame.tz)
        )
        # private but stable since pandas 1.x: the public constructors copy
        # or re-validate a tz-aware index
        array = DatetimeArray._simple_new(datetimes, dtype=dtype)
        index = pd.DatetimeIndex(array, copy=False, name=frame.index_name)
        # _with_freq pins the known freq; passing freq= re-checks every step
        return index._with_freq(freq) if freq is not None else index
    except (ImportError, AttributeError, TypeError, AssertionError):
        # a future pandas changed the private API: a copy is still correct
        index = pd.DatetimeIndex(datetimes, name=frame.index_name)
        if frame.tz is not None:
            index = index.tz_localize("UTC").tz_convert(frame.tz)
        return pd.DatetimeIndex(index, freq=freq) if freq is not None else index


def _frame(frame: FrameLayout, arrays: Iterator[np.ndarray]) -> pd.DataFrame:
    index = _index(next(arrays), frame)
    pickled: dict[int, Any] = pickle.loads(frame.pickled) if frame.pickled else {}
    columns: dict[int, Any] = {}
    # positions as keys: the real labels may repeat or not be strings
    for position, col in enumerate(frame.columns):
        if col.mapped:
            dtype = np.dtype(col.dtype)
            columns[position] = next(arrays).view(dtype)
        else:
            values = pickled[position]
            columns[position] = pd.Series(
                values, index=index, dtype=values.dtype, copy=False
            )
    out = pd.DataFrame(columns, index=index, copy=False)
    out.columns = pd.Index(
        [c.name for c in frame.columns], dtype=frame.columns_dtype, name=frame.columns_name
    )
    return out


def _build(layout: Layout, arrays: Sequence[np.ndarray]) -> Data:
    remaining = iter(arrays)
    if not layout.universe:
        return _frame(layout.frames[0], remaining)
    return {f.symbol: _frame(f, remaining) for f in layout.frames}  # type: ignore[misc]


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

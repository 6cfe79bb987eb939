"""Where a frame's arrays go in a segment, and the frames rebuilt from those arrays.

:func:`layout_of` describes a validated frame (or universe ``{symbol: DataFrame}``)
as a small picklable :class:`Layout` and a list of arrays: per frame, the index
(int64 in the index's own unit) and every numeric column (bool, int, uint, float,
complex, datetime64 and timedelta64 of any width) as raw bytes, each 64-byte
aligned. Columns that cannot be memory-mapped (object, str, categorical, nullable
and other extension dtypes) are pickled into a side blob inside the layout.
:func:`frames_from_arrays` and :func:`build_frames` turn a layout and its arrays
back into equal frames without copying the arrays.

Where those arrays are written and read is :mod:`nbbacktest.parallel.segment_files`
and :mod:`nbbacktest.parallel.shared`. Needs only numpy and pandas.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.readonly import owning_array
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import DataError

__all__ = [
    "BlockLayout",
    "ColumnLayout",
    "Data",
    "FrameLayout",
    "Layout",
    "build_frames",
    "check_arrays",
    "frames_from_arrays",
    "layout_of",
]

#: A frame, a universe ``{symbol: frame}``, or a Universe (one aligned block).
Data: TypeAlias = pd.DataFrame | Mapping[str, pd.DataFrame] | Universe
#: The resolution of a DatetimeIndex.
TimeUnit: TypeAlias = Literal["s", "ms", "us", "ns"]

_ALIGN = 64
# numpy dtype kinds stored as raw bytes: bool, int, uint, float, complex, m8, M8
_MAPPED_KINDS = "biufcmM"

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
    unit: TimeUnit
    tz: str | tzinfo | None
    index_name: Hashable
    freq: str | None
    columns: tuple[ColumnLayout, ...]
    columns_name: Hashable
    columns_dtype: str
    pickled: bytes


@dataclass(frozen=True)
class BlockLayout:
    """Where a :class:`~nbbacktest.engine.universe.Universe` lives in a segment.

    A universe is shared as itself: its bar times and its one price block
    ``(fields, bars, symbols)``, so that every engine of a host reads the same
    aligned block and builds its frames as views of it.

    Attributes
    ----------
    nrows : int
        Number of bars.
    index_offset : int
        Byte offset of the bar times, int64 (UTC) in ``unit``.
    unit, tz, freq
        As in :class:`FrameLayout`.
    offset : int
        Byte offset of the float64 block.
    shape : tuple of int
        The block's shape.
    symbols : tuple of str
        The symbols, in column order.
    """

    nrows: int
    index_offset: int
    unit: TimeUnit
    tz: str | tzinfo | None
    freq: str | None
    offset: int
    shape: tuple[int, int, int]
    symbols: tuple[str, ...]


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
    #: A Universe's bar times and price block (then ``frames`` is empty); None otherwise.
    block: BlockLayout | None = None

    def slots(self) -> Iterator[tuple[int, np.dtype[Any], int]]:
        """``(offset, dtype, count)`` of every stored array, in layout order.

        The dtype is the one the array has in :func:`layout_of`'s list: int64
        for the index and for datetime64/timedelta64 columns.
        """
        if self.block is not None:
            block = self.block
            yield block.index_offset, _I8, block.nrows
            yield block.offset, np.dtype(np.float64), int(np.prod(block.shape))
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


def _tz_field(tz: tzinfo, unit: TimeUnit) -> str | tzinfo:
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
    if isinstance(data, Universe):
        return _block_layout(data, arrays), arrays
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


def _block_layout(universe: Universe, arrays: list[np.ndarray]) -> Layout:
    index = universe.index
    unit = index.unit
    arrays.append(np.ascontiguousarray(index.asi8))
    block = np.ascontiguousarray(universe.block)  # a view when it is one block already
    arrays.append(block.reshape(-1))
    offset = _align(len(index) * 8)
    shape = cast(tuple[int, int, int], tuple(int(n) for n in block.shape))
    layout = BlockLayout(len(index), 0, unit, None if index.tz is None else _tz_field(index.tz, unit),
                         index.freqstr, offset, shape, tuple(str(s) for s in universe.symbols))
    return Layout((), True, max(_align(offset + block.nbytes), _ALIGN), layout)


# ------------------------------------------------------------------ rebuilding


def check_arrays(layout: Layout, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The arrays, C-contiguous with the layout's dtypes; raise on a mismatch.

    Parameters
    ----------
    layout : Layout
        From :func:`layout_of`.
    arrays : sequence of numpy.ndarray
        The arrays :func:`layout_of` returned with it (or copies), in the same order;
        datetime64 and timedelta64 arrays may come as themselves or as their int64 view.

    Returns
    -------
    list of numpy.ndarray
        The arrays, viewed with the dtypes of :meth:`Layout.slots` (no copy when they
        are already C-contiguous).

    Raises
    ------
    ValueError
        There are more or fewer arrays than the layout describes, or one has another
        dtype or shape; the message names the array.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> layout, arrays = layout_of(nbb.load_sample("daily"))
    >>> len(check_arrays(layout, arrays))
    6
    >>> check_arrays(layout, arrays[:5])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the layout describes 6 arrays but 5 were given; pass the arrays layout_of() ...
    """
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
    return build_frames(layout, check_arrays(layout, arrays))


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
        array = DatetimeArray._simple_new(datetimes, dtype=dtype)  # type: ignore[attr-defined]
        index = pd.DatetimeIndex(array, copy=False, name=frame.index_name)
        # _with_freq pins the known freq; passing freq= re-checks every step
        return index._with_freq(freq) if freq is not None else index  # type: ignore[attr-defined]
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
    block = _one_block(list(columns.values()), frame.nrows)
    if block is not None:
        out = pd.DataFrame(block, index=index, copy=False)
    else:
        out = pd.DataFrame(columns, index=index, copy=False)
    out.columns = pd.Index(
        [c.name for c in frame.columns], dtype=frame.columns_dtype, name=frame.columns_name
    )
    return out


def _one_block(columns: list[Any], nrows: int) -> np.ndarray | None:
    """The columns as one read-only ``(nrows, k)`` view when they are float64 views of one
    buffer at evenly spaced offsets (a segment's own layout), else None.

    A frame of one block hands out read-only views of it (``frame.values`` too, which
    for a block per column would be a new, writable array), and the simulator reads it
    without interleaving the columns into a copy.
    """
    if len(columns) < 2 or not all(
        isinstance(c, np.ndarray) and c.dtype == np.float64 and c.ndim == 1 and c.strides == (8,)
        for c in columns
    ):
        return None
    owner = owning_array(columns[0])  # one buffer: the block keeps all of it alive
    if any(owning_array(c) is not owner for c in columns[1:]):
        return None
    starts = [c.__array_interface__["data"][0] for c in columns]
    step = starts[1] - starts[0]
    if step < nrows * 8 or any(b - a != step for a, b in zip(starts, starts[1:])):
        return None
    block = np.lib.stride_tricks.as_strided(columns[0], shape=(nrows, len(columns)), strides=(8, step))
    block.flags.writeable = False
    return block


def build_frames(layout: Layout, arrays: Sequence[np.ndarray]) -> Data:
    """Frames over arrays already known to match the layout, without copying them.

    :func:`frames_from_arrays` checks the arrays first; this is for arrays made from
    the layout itself, such as the views of a mapped segment.

    Parameters
    ----------
    layout : Layout
        From :func:`layout_of`.
    arrays : sequence of numpy.ndarray
        One array per :meth:`Layout.slots` entry, with that dtype and length.

    Returns
    -------
    pandas.DataFrame or dict of str to pandas.DataFrame
        Equal to the data the layout was made from.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> data = nbb.load_sample("daily")
    >>> layout, arrays = layout_of(data)
    >>> build_frames(layout, arrays).equals(data)
    True
    """
    if layout.block is not None:
        block = layout.block
        times = FrameLayout(None, block.nrows, block.index_offset, block.unit, block.tz, None,
                            block.freq, (), None, "object", b"")
        values = np.asarray(arrays[1]).reshape(block.shape)
        return Universe(values, _index(np.asarray(arrays[0]), times), block.symbols)
    remaining = iter(arrays)
    if not layout.universe:
        return _frame(layout.frames[0], remaining)
    return {f.symbol: _frame(f, remaining) for f in layout.frames}  # type: ignore[misc]


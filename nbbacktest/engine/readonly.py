"""Read-only views of validated market data: what a strategy sees.

Every run of a sweep reads the same frame. A run's strategy gets its own frame
over read-only views of the shared columns and bar times (no copy), so a write
into the values raises instead of changing what other runs read, and a column it
adds stays in its own frame. See ``PreparedData.run_frame`` in
:mod:`nbbacktest.engine.types`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.caches import IdentityCache
from nbbacktest.engine.data import float_values

__all__ = ["owning_array", "read_only_frame", "read_only_index"]


def read_only_index(index: pd.Index) -> pd.Index:
    """The same bar times over a read-only view of ``index``'s array (no copy).

    A DatetimeIndex hands out its int64 array writable (``index.asi8``), so user
    code could rewrite the bar times that every run on the data shares. Built
    once per index object (remembered by identity); other indexes come back as
    they are.

    Examples
    --------
    >>> index = pd.date_range("2024-01-01", periods=3, freq="D")
    >>> shared = read_only_index(index)
    >>> shared.equals(index), shared.freq == index.freq, shared.asi8.flags.writeable
    (True, True, False)
    >>> read_only_index(index) is shared
    True
    """
    if not isinstance(index, pd.DatetimeIndex):
        return index
    return _READ_ONLY_INDEXES.get(index, _read_only_datetimes)


def _read_only_datetimes(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    # pandas' private constructors (absent from pandas-stubs) wrap the view without
    # a copy or a check; the public ones copy or validate every bar.
    array: Any = index.array
    backing = array._ndarray.view()
    backing.flags.writeable = False
    shared = pd.DatetimeIndex._simple_new(  # type: ignore[attr-defined]
        array._from_backing_data(backing), name=index.name
    )
    # as pandas' own DatetimeIndex.copy() does: setting .freq would check it
    # against every bar (milliseconds on long data)
    shared._freq = index.freq
    # Same memory, so pandas may treat the two as views of one another (as
    # Index.view() does): equals() between them is then an identity check.
    shared._id = index._id  # type: ignore[attr-defined]
    return shared


# DatetimeIndex -> its read-only twin: every backtest on a frame shares one.
_READ_ONLY_INDEXES = IdentityCache(kept=64)


def owning_array(array: np.ndarray) -> np.ndarray:
    """The array at the root of ``array``'s views: the one whose memory it reads.

    Examples
    --------
    >>> block = np.zeros((2, 3))
    >>> owning_array(block[1][::2]) is block
    True
    """
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def read_only_frame(
    frame: pd.DataFrame, values: np.ndarray | None = None, index: pd.Index | None = None
) -> pd.DataFrame:
    """A new frame over read-only views of ``frame``'s columns: what a strategy sees.

    Nothing is copied. A write into the values (``data["Close"].array[:] = 0``,
    ``data.index.asi8[0] = 0``) raises ``ValueError: assignment destination is
    read-only`` instead of changing the data other runs read; ``frame`` itself
    stays writable and untouched. Columns of a non-numpy extension type (pyarrow
    strings) are shared as they are.

    Parameters
    ----------
    frame : pandas.DataFrame
        A validated frame.
    values : numpy.ndarray, optional
        ``frame``'s single float64 block as :func:`float_values` gives it.
    index : pandas.Index, optional
        The index to use, by default ``read_only_index(frame.index)``.

    Examples
    --------
    >>> idx = pd.date_range("2024-01-01", periods=2)
    >>> frame = pd.DataFrame({"Open": [1.0, 2.0], "High": [2.0, 3.0],
    ...                       "Low": [1.0, 2.0], "Close": [2.0, 3.0]}, index=idx)
    >>> shared = read_only_frame(frame)
    >>> shared.equals(frame), shared["Close"].array._ndarray.flags.writeable
    (True, False)
    """
    if index is None:
        index = read_only_index(frame.index)
    if values is None:
        values = float_values(frame, interleave=False)
    if values is not None:
        view = values.view()
        view.flags.writeable = False
        # Transposed back, this is the layout of frame's own block: one block, no copy.
        shared = pd.DataFrame(view, index=index, columns=frame.columns, copy=False)
    else:
        arrays = {i: _read_only_column(frame.iloc[:, i]) for i in range(frame.shape[1])}
        shared = pd.DataFrame(arrays, index=index, copy=False)
        shared.columns = frame.columns
    if frame.attrs:
        shared.attrs = frame.attrs
    return shared


def _read_only_column(column: pd.Series) -> Any:
    if isinstance(column.dtype, np.dtype):
        view = column.to_numpy().view()
    else:
        array = column.array
        backing = getattr(array, "_ndarray", None)
        if not isinstance(backing, np.ndarray):
            return array  # e.g. pyarrow-backed: no writeable flag to clear
        view = backing.view()
        view.flags.writeable = False
        return array._from_backing_data(view)
    view.flags.writeable = False
    return view

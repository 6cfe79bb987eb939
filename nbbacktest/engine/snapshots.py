"""Tell whether a frame still holds what it held: a private copy of its bits, compared.

``backtest()`` in a loop (or each move of an explorer's slider) validates the same
user frame again and again; when the frame is not canonical (lower-case names, a date
column, int prices) that rebuilds it each time. :class:`FrameSnapshot` lets the
validated frame be remembered until the user's frame changes.

Why a copy, and not a hash or pandas' block identities: a cryptographic hash of a
20,000-bar frame costs milliseconds (blake2b: 3.5 ms for six float64 columns, more
than the backtest), while comparing with a copy costs about 0.15 ms, most of it
pandas handing out the columns, and can never be fooled. Copy-on-write alone is
not enough either: it makes an edit through pandas (``frame.loc[t, "Close"] = x``)
replace the edited block, but memory that a numpy array shares with the frame
(``pd.DataFrame(array, copy=False)``, a ``to_numpy()`` view made writable again,
``index.asi8``) changes in place under the same blocks.
Needs only numpy and pandas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FrameSnapshot"]

#: Unsigned ints of each item size: every column is compared as its raw bits, so that
#: NaN equals NaN, -0.0 differs from 0.0 and datetimes compare as int64.
_BITS: dict[int, np.dtype[Any]] = {
    size: np.dtype(f"u{size}") for size in (1, 2, 4, 8)
}
#: bool, int, uint, float, timedelta, datetime: numpy kinds whose values are their bits.
_KINDS = frozenset("biufmM")
#: Values held as an immutable object, compared by identity (see ``_contents``).
Immutable = Any


class FrameSnapshot:
    """What a frame held when it was taken: column labels, dtypes, index and every value.

    :meth:`matches` is True only when the frame's labels and dtypes are equal, its
    index is the very same object and every column and index value is what it was:
    then anything computed from the frame then holds now. Values in numpy arrays are
    copied and compared bit for bit, so no later write, through pandas or through
    shared memory, reaches the snapshot; strings that pyarrow holds (pandas' default
    ``str`` dtype, what ``read_csv`` gives a date column) are immutable: the snapshot
    holds the very arrow array, and pandas replaces it on any edit. Frames with a
    column or index held otherwise (Python strings, objects, categoricals, nullable
    ints; a tz-aware datetime is fine), or with ``attrs`` (free-form metadata changed
    in place) have no snapshot: :meth:`of` returns None.

    Examples
    --------
    >>> frame = pd.DataFrame({"close": [1.0, 2.0]}, index=pd.date_range("2024-01-01", periods=2))
    >>> snapshot = FrameSnapshot.of(frame)
    >>> snapshot.matches(frame)
    True
    >>> frame.loc[frame.index[1], "close"] = 3.0
    >>> snapshot.matches(frame)
    False
    """

    __slots__ = ("_columns", "_labels", "_index", "_dtypes", "_contents", "nbytes")

    def __init__(self, frame: pd.DataFrame, dtypes: list[Any], contents: list[Any]) -> None:
        self._columns = frame.columns  # held: no other Index can take its id
        self._labels = frame.columns.tolist()
        self._index = frame.index
        self._dtypes = dtypes
        # the index's contents last; arrays copied, immutable objects held as they are
        self._contents = [c.copy() if isinstance(c, np.ndarray) else c for c in contents]
        self.nbytes = sum(c.nbytes for c in self._contents if isinstance(c, np.ndarray))

    @classmethod
    def of(cls, frame: pd.DataFrame, max_bytes: int | None = None) -> FrameSnapshot | None:
        """A snapshot of ``frame``; None when a column cannot be compared (see the class),
        or when the values to copy take more than ``max_bytes``."""
        if frame.attrs:
            return None
        found = _all_contents(frame)
        if found is None:
            return None
        dtypes, contents = found
        size = sum(c.nbytes for c in contents if isinstance(c, np.ndarray))
        if max_bytes is not None and size > max_bytes:
            return None
        return cls(frame, dtypes, contents)

    def matches(self, frame: pd.DataFrame) -> bool:
        """Whether ``frame`` holds what it held when the snapshot was taken."""
        if frame.index is not self._index or frame.columns is not self._columns or frame.attrs:
            return False
        if frame.columns.tolist() != self._labels:
            return False
        found = _all_contents(frame)
        if found is None or found[0] != self._dtypes:
            return False
        return all(map(_same, found[1], self._contents))


def _same(now: Any, then: Any) -> bool:
    if isinstance(then, np.ndarray):
        return (isinstance(now, np.ndarray) and now.shape == then.shape
                and bool(np.array_equal(now, then)))
    return now is then


def _all_contents(frame: pd.DataFrame) -> tuple[list[Any], list[Any]] | None:
    """The dtypes and contents (see ``_contents``) of every column, then of the index."""
    dtypes, contents = [], []
    every: list[pd.Series | pd.Index] = [column for _, column in frame.items()]
    every.append(frame.index)
    for values in every:
        content = _contents(values)
        if content is None:
            return None
        dtypes.append(values.dtype)
        contents.append(content)
    return dtypes, contents


def _contents(values: pd.Series | pd.Index) -> np.ndarray | Immutable | None:
    """What stands for the values of a Series or an Index: their bits as unsigned ints
    (a view: compared by content), an immutable object (compared by identity), or None
    when they can be neither."""
    dtype = values.dtype
    if isinstance(values, pd.RangeIndex):
        return values  # three ints, never changed in place
    if isinstance(dtype, pd.DatetimeTZDtype):
        array = np.asarray(values.array.asi8)  # UTC nanoseconds; the zone is in the dtype
    elif isinstance(dtype, np.dtype) and dtype.kind in _KINDS and dtype.itemsize in _BITS:
        array = values.to_numpy()  # a view of what pandas holds
    elif isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        # pyarrow arrays are immutable; an edit gives the column a new one
        return values.array.__arrow_array__()
    else:
        return None
    return array.view(_BITS[array.dtype.itemsize])

"""Load and validate OHLCV market data and strategy signals.

Market data is a :class:`pandas.DataFrame` with a strictly increasing
:class:`~pandas.DatetimeIndex` and float64 columns ``Open``, ``High``, ``Low``,
``Close`` (``Volume`` optional). A mapping ``{symbol: DataFrame}`` is a
*universe*. Everything here needs only numpy and pandas.

Validation runs before every backtest, so a frame that is already canonical is
checked with a handful of vectorised comparisons and returned as is; anything
that needs fixing produces a new frame (the caller's frame is never modified).
"""

from __future__ import annotations

import codecs
import errno
import math
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.errors import DataError, NbbacktestWarning, ParamError

__all__ = [
    "OHLC",
    "Universe",
    "is_universe",
    "load_ohlcv",
    "validate_data",
    "validate_ohlcv",
    "validate_signals",
]

OHLC: tuple[str, ...] = ("Open", "High", "Low", "Close")
Universe = Mapping[str, pd.DataFrame]

_VOLUME = "Volume"
# lower-case name -> canonical name, for case-insensitive matching
_CANONICAL: dict[str, str] = {c.lower(): c for c in (*OHLC, _VOLUME)}
_DATE_NAMES = ("date", "datetime", "time", "timestamp")
_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_FLOAT = np.dtype(np.float64)
_SHOW = 3  # how many offending timestamps an error message lists
# signals a hair above the limit come from float arithmetic, not intent
_SIGNAL_TOLERANCE = 1e-9


class IdentityCache:
    """Values computed from immutable objects (a pandas Index), remembered per object.

    A backtest on a frame already seen skips work that depends only on its column
    names or bar times. Entries hold weak references, so an object that dies is never
    mistaken for a new one at the same address, and its entry goes with it; the
    cache is cleared when full.

    Examples
    --------
    >>> cache = IdentityCache(kept=8)
    >>> index = pd.Index(["a", "b"])
    >>> cache.get(index, len), cache.get(index, lambda i: 0)  # computed once
    (2, 2)
    """

    def __init__(self, kept: int) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}
        self._kept = kept

    def get(self, key: Any, compute: Any) -> Any:
        """``compute(key)``, or what it returned the last time for this very object."""
        entry = self._entries.get(id(key))
        if entry is not None and entry[0]() is key:
            return entry[1]
        value = compute(key)
        entries = self._entries
        if len(entries) >= self._kept:
            entries.clear()
        ident = id(key)

        def forget(reference: weakref.ref) -> None:
            if entries.get(ident, (None,))[0] is reference:
                entries.pop(ident, None)

        try:
            entries[ident] = (weakref.ref(key, forget), value)
        except TypeError:  # no weak references to it: just don't remember it
            pass
        return value


def scratch_rows(n: int, count: int = 3) -> np.ndarray:
    """``count`` (at most 3) float64 rows of ``n`` values for one call's per-bar temporaries.

    Reused call after call on the same thread (threads never share them): a sweep
    then allocates no per-bar memory, which on long series saves more time in page
    faults than the arithmetic costs. The rows hold garbage; the caller must not
    run user code while it uses them (user code may start a backtest of its own).

    Examples
    --------
    >>> scratch_rows(10).shape, scratch_rows(10, 1).shape
    ((3, 10), (1, 10))
    """
    if n > _SCRATCH_MAX_BARS:
        return np.empty((count, n))
    rows = getattr(_SCRATCH, "rows", None)
    if rows is None or rows.shape[1] < n:
        rows = _SCRATCH.rows = np.empty((3, n))
    return rows[:count, :n]


_SCRATCH = threading.local()
#: Data up to this many bars keeps its scratch rows (24 bytes per bar) between calls;
#: longer data gets fresh rows, so that no thread holds more than 24 MiB.
_SCRATCH_MAX_BARS = 1 << 20
# columns Index -> (name -> position, canonical names in canonical order)
_COLUMNS = IdentityCache(kept=256)


# ------------------------------------------------------------------ isolation


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
    array = index.array
    backing = array._ndarray.view()
    backing.flags.writeable = False
    shared = pd.DatetimeIndex._simple_new(array._from_backing_data(backing), name=index.name)
    # as pandas' own DatetimeIndex.copy() does: setting .freq would check it
    # against every bar (milliseconds on long data)
    shared._freq = index.freq
    # Same memory, so pandas may treat the two as views of one another (as
    # Index.view() does): equals() between them is then an identity check.
    shared._id = index._id
    return shared


# DatetimeIndex -> its read-only twin: every backtest on a frame shares one.
_READ_ONLY_INDEXES = IdentityCache(kept=64)


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
        values = float_values(frame)
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


# --------------------------------------------------------------------- loading


def load_ohlcv(
    source: str | os.PathLike[str] | pd.DataFrame | Mapping[str, Any],
    *,
    date_column: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Load OHLCV market data from a file, a DataFrame or a mapping of them.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame or Mapping
        A path to a ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` file; a
        DataFrame; or a mapping ``{symbol: DataFrame or path}`` (a universe).
    date_column : str, optional
        The column holding the timestamps. By default a CSV file's first
        column is parsed as the dates, and a DataFrame without a
        DatetimeIndex uses a column named date, datetime, time or timestamp
        (any case).
    encoding : str, default "utf-8"
        The text encoding of CSV files, e.g. ``"latin-1"`` or ``"cp1252"``
        for files saved by Excel on Windows. Parquet files ignore it.

    Returns
    -------
    pandas.DataFrame or dict of str to pandas.DataFrame
        Validated data (see :func:`validate_ohlcv`); a plain dict in the
        mapping's order for a universe.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DataError
        The file type is not supported, a CSV file is not text in
        ``encoding``, or the data is malformed.
    TypeError
        ``source`` is none of the accepted types.
    ValueError
        ``encoding`` is not a known text encoding.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame(
    ...     {"date": ["2024-01-02", "2024-01-03"], "open": [10.0, 10.5],
    ...      "high": [11.0, 11.0], "low": [9.5, 10.0], "close": [10.5, 10.8]})
    >>> df = load_ohlcv(raw)
    >>> list(df.columns), isinstance(df.index, pd.DatetimeIndex)
    (['Open', 'High', 'Low', 'Close'], True)

    A CSV file in another encoding than UTF-8 names its encoding:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "caf\u00e9.csv")
    >>> raw.assign(note="caf\u00e9").to_csv(path, index=False, encoding="latin-1")
    >>> load_ohlcv(path, encoding="latin-1")["note"].iloc[0]
    'caf\u00e9'
    """
    _check_encoding(encoding)
    if isinstance(source, pd.DataFrame):
        return _validate_frame(source, "data", date_column)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, f"file {os.fspath(source)!r}", date_column, encoding)
    if isinstance(source, Mapping):
        symbols = _check_universe_keys(source, "data")
        out: dict[str, pd.DataFrame] = {}
        for symbol in symbols:
            value = source[symbol]
            name = f"data[{symbol!r}]"
            if isinstance(value, pd.DataFrame):
                out[symbol] = _validate_frame(value, name, date_column)
            elif isinstance(value, (str, os.PathLike)):
                name = f"{name} (file {os.fspath(value)!r})"
                out[symbol] = _load_path(value, name, date_column, encoding)
            else:
                raise TypeError(
                    f"{name} must be a pandas DataFrame or a path (str or "
                    f"os.PathLike), got {type(value).__name__}"
                )
        return out
    raise TypeError(
        "source must be a path (str or os.PathLike) to a "
        f"{_suffix_list()} file, a pandas DataFrame, or a mapping "
        f"{{symbol: DataFrame or path}}; got {type(source).__name__}"
    )


def _suffix_list() -> str:
    return ", ".join(_SUFFIXES)


def _check_encoding(encoding: Any) -> None:
    if not isinstance(encoding, str):
        raise TypeError(
            f"encoding must be a str such as 'utf-8' or 'latin-1', got {type(encoding).__name__}"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"encoding={encoding!r} is not a known text encoding; use e.g. 'utf-8', "
            "'latin-1' or 'cp1252'"
        ) from None


def _load_path(
    path: str | os.PathLike[str], name: str, date_column: str | None, encoding: str = "utf-8"
) -> pd.DataFrame:
    p = Path(path)
    lower = p.name.lower()
    suffix = next((s for s in _SUFFIXES if lower.endswith(s)), None)
    if suffix is None:
        found = "".join(p.suffixes) or "no suffix"
        raise DataError(
            f"{name}: unsupported file type ({found}); supported suffixes are "
            f"{_suffix_list()}. Load other formats with pandas and pass the "
            "DataFrame instead."
        )
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, "OHLCV file not found", str(p))
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(p)
        except ImportError as e:
            raise ImportError(
                f"reading {str(p)!r} needs pyarrow: pip install 'nbbacktest[parquet]'"
            ) from e
        return _validate_frame(frame, name, date_column)
    try:
        frame = pd.read_csv(p, encoding=encoding)  # compression inferred from the .gz suffix
    except UnicodeDecodeError as e:
        # pandas' message names neither the file nor the way out
        bad = e.object[e.start:e.end]
        raise DataError(
            f"{name} is not {encoding} text: {e.reason} (byte(s) {bad!r}). "
            "Pass the file's encoding, e.g. load_ohlcv(path, encoding='latin-1') or "
            "encoding='cp1252' for a file saved by Excel on Windows."
        ) from e
    if len(frame.columns) == 0:
        raise DataError(f"{name} is empty: it has no columns")
    if date_column is None:
        first = frame.columns[0]
        # a leading integer column is a saved RangeIndex, not dates: let the
        # date-column detection find e.g. a later 'Date' column instead
        if not (
            pd.api.types.is_numeric_dtype(frame[first].dtype)
            and _find_date_column(frame, None, name) is not None
        ):
            date_column = first
    return _validate_frame(frame, name, date_column)


# ------------------------------------------------------------------ validation


def is_universe(data: object) -> bool:
    """Tell whether ``data`` is a universe (a mapping of symbol to frame).

    Parameters
    ----------
    data : object
        Market data: a DataFrame or a mapping ``{symbol: DataFrame}``.

    Returns
    -------
    bool
        True for a mapping (other than a DataFrame), False otherwise.

    Examples
    --------
    >>> import pandas as pd
    >>> is_universe({"AAA": pd.DataFrame()}), is_universe(pd.DataFrame())
    (True, False)
    """
    return isinstance(data, Mapping) and not isinstance(data, (pd.DataFrame, pd.Series))


def validate_data(
    data: pd.DataFrame | Mapping[str, pd.DataFrame], *, name: str = "data"
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Validate one OHLCV frame or a universe of them.

    Parameters
    ----------
    data : pandas.DataFrame or Mapping of str to pandas.DataFrame
        One instrument, or a universe ``{symbol: DataFrame}``.
    name : str, default "data"
        How error messages call the data; a universe's frames are called
        ``f"{name}[{symbol!r}]"``.

    Returns
    -------
    pandas.DataFrame or dict of str to pandas.DataFrame
        The validated frame, or a plain dict in the mapping's order.

    Raises
    ------
    DataError
        The data is malformed, the mapping is empty or a key is not a str.
    TypeError
        ``data`` is neither a DataFrame nor a mapping of DataFrames.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=2)
    >>> frame = pd.DataFrame({"Open": [1.0, 2.0], "High": [2.0, 3.0],
    ...                       "Low": [1.0, 2.0], "Close": [2.0, 3.0]}, index=idx)
    >>> list(validate_data({"AAA": frame, "BBB": frame}))
    ['AAA', 'BBB']
    """
    if isinstance(data, pd.DataFrame):
        return _validate_frame(data, name, None)
    if is_universe(data):
        out: dict[str, pd.DataFrame] = {}
        for symbol in _check_universe_keys(data, name):  # type: ignore[arg-type]
            frame = data[symbol]  # type: ignore[index]
            item = f"{name}[{symbol!r}]"
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(
                    f"{item} must be a pandas DataFrame, got {type(frame).__name__}"
                )
            out[symbol] = _validate_frame(frame, item, None)
        return out
    raise TypeError(
        f"{name} must be a pandas DataFrame or a mapping {{symbol: DataFrame}}, "
        f"got {type(data).__name__}"
    )


def _check_universe_keys(mapping: Mapping[Any, Any], name: str) -> list[str]:
    keys = list(mapping)
    if not keys:
        raise DataError(
            f"{name} is an empty mapping; a universe needs at least one symbol, "
            "e.g. {'AAPL': df}"
        )
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        shown = ", ".join(repr(k) for k in bad[:_SHOW])
        raise DataError(
            f"{name} has {len(bad)} non-str key(s) ({shown}); universe symbols "
            "must be str, e.g. {str(k): df for k, df in data.items()}"
        )
    return keys


def validate_ohlcv(frame: pd.DataFrame, *, name: str = "data") -> pd.DataFrame:
    """Check one OHLCV frame and return it in canonical form.

    Column names are matched case-insensitively and renamed to ``Open``,
    ``High``, ``Low``, ``Close`` and ``Volume`` (optional); other columns are
    kept unchanged. OHLC(V) become float64. An index that is not a
    DatetimeIndex is replaced by a column named date, datetime, time or
    timestamp (any case) when there is one. An unsorted index is sorted with a
    :class:`~nbbacktest.errors.NbbacktestWarning`.

    A frame that is already canonical is returned as is (no copy); otherwise
    a new frame is built and ``frame`` is left untouched.

    Parameters
    ----------
    frame : pandas.DataFrame
        Market data for one instrument.
    name : str, default "data"
        How error messages call the frame, e.g. ``"data['AAPL']"``.

    Returns
    -------
    pandas.DataFrame
        The canonical frame.

    Raises
    ------
    DataError
        One error per fault, naming ``name`` and the fix: missing OHLC
        columns, no datetime index, duplicated timestamps, NaN or infinite
        prices, non-positive prices, High < Low, Open or Close outside
        [Low, High], an empty frame or a non-numeric column.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=3)
    >>> raw = pd.DataFrame({"open": [1, 2, 3], "HIGH": [2, 3, 4],
    ...                     "Low": [1, 2, 3], "close": [2, 3, 4]}, index=idx)
    >>> df = validate_ohlcv(raw)
    >>> list(df.columns), df["Close"].dtype
    (['Open', 'High', 'Low', 'Close'], dtype('float64'))
    >>> validate_ohlcv(df) is df  # already canonical: nothing to do
    True
    """
    return _validate_frame(frame, name, None)


def _validate_frame(
    frame: pd.DataFrame, name: str, date_column: str | None
) -> pd.DataFrame:
    return validated_values(frame, name, date_column)[0]


def validated_values(
    frame: pd.DataFrame, name: str = "data", date_column: str | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """:func:`validate_ohlcv`, plus the frame's float64 values when it had them at hand.

    The values (see :func:`float_values`) save the simulator a second look at the
    frame; None when the frame is not a single float64 block.

    Examples
    --------
    >>> idx = pd.date_range("2024-01-01", periods=2)
    >>> frame = pd.DataFrame({"Open": [1.0, 2.0], "High": [2.0, 3.0],
    ...                       "Low": [1.0, 2.0], "Close": [2.0, 3.0]}, index=idx)
    >>> checked, values = validated_values(frame)
    >>> checked is frame, values.shape
    (True, (2, 4))
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise DataError(
            f"{name} is empty (0 rows); it needs at least one bar of "
            f"{', '.join(OHLC)} prices"
        )
    if (
        date_column is None
        and isinstance(frame.index, pd.DatetimeIndex)
        and _index_ok(frame.index)
    ):
        if _COLUMNS.get(frame.columns, _column_facts)[1]:
            # the common case, kept cheap: canonical names in canonical order
            values = float_values(frame)
            if values is not None:
                o, h, l, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
                _check_values(o, h, l, c, frame.index, name)
                return frame, values
        else:
            # canonical names among other columns: still nothing to rebuild
            rename = _column_mapping(frame, name)
            if all(k == v for k, v in rename.items()):
                cols = {c: frame[c] for c in rename}
                if all(col.dtype == _FLOAT for col in cols.values()):
                    o, h, l, c = (cols[k].to_numpy() for k in OHLC)
                    _check_values(o, h, l, c, frame.index, name)
                    return frame, None
    return _normalise(frame, name, date_column), None


def float_values(frame: pd.DataFrame) -> np.ndarray | None:
    """All columns as one float64 array when every column already is float64, else None.

    Under copy-on-write this is a view of the frame's single block: no copy.
    """
    values = frame.to_numpy()
    if values.dtype != _FLOAT:
        return None
    # Under copy-on-write a read-only result is a view of a single block, so
    # every column is float64 and the costly ``frame.dtypes`` can be skipped.
    # A writable one was interleaved from several blocks: some might have
    # been ints or bools, so look.
    if values.flags.writeable and not all(dtype == _FLOAT for dtype in frame.dtypes):
        return None
    return values


def column_positions(columns: pd.Index) -> dict[Any, int]:
    """Each column name's position, remembered per columns Index (they are immutable).

    Reading the names of a string Index costs microseconds that every backtest on the
    same frame would pay again.

    Examples
    --------
    >>> column_positions(pd.Index(["Open", "High", "Low", "Close"]))["Close"]
    3
    """
    return _COLUMNS.get(columns, _column_facts)[0]


def _column_facts(columns: pd.Index) -> tuple[dict[Any, int], bool]:
    names = columns.tolist()
    canonical = names == list(OHLC) or names == [*OHLC, _VOLUME]
    return {name: i for i, name in enumerate(names)}, canonical


def _index_ok(index: pd.DatetimeIndex) -> bool:
    # both flags are cached on the index, so repeated validation is free
    return index.is_monotonic_increasing and index.is_unique and not index.hasnans


def _normalise(frame: pd.DataFrame, name: str, date_column: str | None) -> pd.DataFrame:
    """The slow path: rename, convert, re-index and sort into a new frame."""
    rename = _column_mapping(frame, name)
    index = frame.index
    drop: list[Any] = []
    if date_column is not None or not isinstance(index, pd.DatetimeIndex):
        found = _find_date_column(frame, date_column, name)
        if found is None:
            raise DataError(
                f"{name} must have a DatetimeIndex, got a "
                f"{type(index).__name__} and no date column (looked for "
                f"{', '.join(_DATE_NAMES)} in any case among columns "
                f"{_column_names(frame)}). Set one with "
                "`df.index = pd.to_datetime(df.index)`, or pass date_column=..."
            )
        index = _parse_dates(frame[found], found, name)
        drop.append(found)
        rename.pop(found, None)

    if index.hasnans:
        bad = np.flatnonzero(index.isna())
        raise DataError(
            f"{name} has {len(bad)} missing timestamp(s) (NaT) in its index, "
            f"first at row(s) {', '.join(str(i) for i in bad[:_SHOW])}. Please "
            "strip those rows with `df[df.index.notna()]`."
        )
    if not index.is_unique:
        dup = index[index.duplicated()]
        shown = ", ".join(_fmt_ts(t) for t in dup.unique()[:_SHOW])
        raise DataError(
            f"{name} has {len(dup)} duplicated timestamp(s) in its index, e.g. "
            f"{shown}. Keep one row per timestamp, e.g. "
            "`df[~df.index.duplicated(keep='last')]`."
        )

    # under copy-on-write these are lazy: nothing is copied until a column
    # is replaced, and the caller's frame is never touched
    out = frame.drop(columns=drop) if drop else frame.copy(deep=False)
    out = out.rename(columns=rename)
    out.index = index
    for target in rename.values():
        column = out[target]
        if column.dtype != _FLOAT:
            out[target] = _to_float(column, target, name)
    if not index.is_monotonic_increasing:
        _warn(f"{name}'s index was not sorted; sorted it by time.")
        out = out.sort_index(kind="stable")
    o, h, l, c = (out[k].to_numpy() for k in OHLC)
    _check_values(o, h, l, c, out.index, name)
    return out


def _column_names(frame: pd.DataFrame) -> list[Any]:
    return list(frame.columns)


def _column_mapping(frame: pd.DataFrame, name: str) -> dict[Any, str]:
    """Map each column that is an OHLCV field (any case) to its canonical name."""
    rename: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for col in frame.columns:
        if not isinstance(col, str):
            continue
        target = _CANONICAL.get(col.strip().lower())
        if target is None:
            continue
        if target in seen:
            raise DataError(
                f"{name} has two columns for {target}: {seen[target]!r} and "
                f"{col!r}; drop one of them."
            )
        seen[target] = col
        rename[col] = target
    missing = [c for c in OHLC if c not in seen]
    if missing:
        raise DataError(
            f"{name} is missing column(s) {', '.join(map(repr, missing))}; found "
            f"columns {_column_names(frame)}. Columns Open, High, Low and Close "
            "are required (any case); rename yours with `df.rename(columns={...})`."
        )
    return rename


def _find_date_column(frame: pd.DataFrame, date_column: str | None, name: str) -> Any:
    """The column to use as the index, or None when there is none."""
    columns = list(frame.columns)
    if date_column is not None:
        if date_column in columns:
            return date_column
        for col in columns:
            if isinstance(col, str) and col.lower() == date_column.lower():
                return col
        raise DataError(
            f"{name} has no column {date_column!r} (date_column); found "
            f"columns {columns}"
        )
    for col in columns:
        if isinstance(col, str) and col.strip().lower() in _DATE_NAMES:
            return col
    return None


def _parse_dates(column: pd.Series, label: Any, name: str) -> pd.DatetimeIndex:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
        column.dtype
    ):
        # pd.to_datetime would read numbers as nanoseconds since 1970
        raise DataError(
            f"{name}: column {label!r} holds numbers, not dates; pass "
            "date_column='...' naming the date column, or convert it with "
            "`pd.to_datetime(df[col], unit='s')`."
        )
    try:
        with warnings.catch_warnings():
            # pandas then parses element by element, which is what we want;
            # its warning would point at nbbacktest, not at the data
            warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
            parsed = pd.to_datetime(column)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(
            f"{name}: could not parse column {label!r} as dates ({e}). Pass "
            "date_column='...' naming the date column, or parse it yourself "
            "with pd.to_datetime."
        ) from e
    return pd.DatetimeIndex(parsed, name=label)


def _to_float(column: pd.Series, label: str, name: str) -> np.ndarray:
    dtype = column.dtype
    if dtype == _FLOAT:
        return column.to_numpy()
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        # nullable (Int64, Float64) columns turn pd.NA into NaN
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    sample = column.dropna()
    example = f", e.g. {sample.iloc[0]!r}" if len(sample) else ""
    raise DataError(
        f"{name}: column {label!r} is not numeric (dtype {dtype}{example}). "
        f"Convert it with `df[{label!r}] = pd.to_numeric(df[{label!r}])`."
    )


def _fmt_ts(ts: Any) -> str:
    ts = pd.Timestamp(ts)
    if ts.tz is None and ts == ts.normalize():
        return ts.strftime("%Y-%m-%d")
    return str(ts)


def _check_values(
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,  # noqa: E741
    c: np.ndarray,
    index: pd.Index,
    name: str,
) -> None:
    """Raise one DataError for the first fault found in the OHLC prices."""
    # 0 < Low <= min(O, C) <= max(O, C) <= High < inf proves all the rest, checked
    # as four reductions over one scratch row: between finite values a difference
    # is >= 0 exactly when the comparison holds, and NaN (in a price, or from
    # inf - inf) propagates through minimum, maximum and subtract and fails them.
    gap = scratch_rows(len(o), 1)[0]
    np.minimum(o, c, out=gap)
    np.subtract(gap, l, out=gap)
    if float(np.minimum.reduce(gap)) >= 0.0:
        np.maximum(o, c, out=gap)
        np.subtract(h, gap, out=gap)
        if (
            float(np.minimum.reduce(gap)) >= 0.0
            and float(np.minimum.reduce(l)) > 0.0
            and float(np.maximum.reduce(h)) < math.inf
        ):
            return
    _diagnose(dict(zip(OHLC, (o, h, l, c))), index, name)


def _where(mask_by_column: dict[str, np.ndarray], index: pd.Index) -> str:
    parts = []
    for col, mask in mask_by_column.items():
        rows = np.flatnonzero(mask)
        if len(rows):
            more = ", ..." if len(rows) > _SHOW else ""
            stamps = ", ".join(_fmt_ts(index[i]) for i in rows[:_SHOW])
            parts.append(f"{len(rows)} in {col} (at {stamps}{more})")
    return "; ".join(parts)


def _diagnose(cols: dict[str, np.ndarray], index: pd.Index, name: str) -> None:
    nan = {k: np.isnan(v) for k, v in cols.items()}
    count = sum(int(m.sum()) for m in nan.values())
    if count:
        raise DataError(
            f"{name} has {count} missing (NaN) OHLC value(s): {_where(nan, index)}. "
            "Please strip those rows with `df.dropna(subset=['Open', 'High', "
            "'Low', 'Close'])` or fill them, e.g. with `df.ffill()`."
        )
    inf = {k: np.isinf(v) for k, v in cols.items()}
    count = sum(int(m.sum()) for m in inf.values())
    if count:
        raise DataError(
            f"{name} has {count} infinite OHLC value(s): {_where(inf, index)}. "
            "Please strip those rows with "
            "`df.replace([np.inf, -np.inf], np.nan).dropna()`."
        )
    nonpos = {k: v <= 0 for k, v in cols.items()}
    count = sum(int(m.sum()) for m in nonpos.values())
    if count:
        raise DataError(
            f"{name} has {count} non-positive price(s) (<= 0): "
            f"{_where(nonpos, index)}. Prices must be > 0; strip those rows or "
            "shift the series (e.g. back-adjusted futures) above zero."
        )
    o, h, l, c = (cols[k] for k in OHLC)
    bad = np.flatnonzero(h < l)
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{name} has {len(bad)} bar(s) with High < Low, first at "
            f"{_fmt_ts(index[i])} (High={h[i]:g}, Low={l[i]:g}). Check that the "
            "High and Low columns are not swapped, or strip those rows."
        )
    outside = {"Open": (o < l) | (o > h), "Close": (c < l) | (c > h)}
    rows = np.flatnonzero(outside["Open"] | outside["Close"])
    if len(rows):
        i = rows[0]
        which = " and ".join(k for k, m in outside.items() if m.any())
        raise DataError(
            f"{name} has {len(rows)} bar(s) with {which} outside [Low, High], "
            f"first at {_fmt_ts(index[i])} (Open={o[i]:g}, High={h[i]:g}, "
            f"Low={l[i]:g}, Close={c[i]:g}). Fix those rows, e.g. "
            "`df['High'] = df[['Open', 'High', 'Close']].max(axis=1)` and "
            "`df['Low'] = df[['Open', 'Low', 'Close']].min(axis=1)`."
        )
    raise AssertionError("unreachable: prices failed the fast check but no fault found")


def _is_ours(module: str) -> bool:
    return module == "nbbacktest" or module.startswith("nbbacktest.")


def _warn(message: str) -> None:
    """Warn with the stack level of the first frame outside nbbacktest."""
    # validation is reached from load_ohlcv, backtest, sweep, ...: a fixed
    # stacklevel would point at our own code for all but one of them
    frame: Any = sys._getframe(1)
    level = 2
    while frame is not None and _is_ours(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, NbbacktestWarning, stacklevel=level)


# --------------------------------------------------------------------- signals

def validate_signals(
    signals: pd.Series | pd.DataFrame | np.ndarray | Sequence[float],
    data: pd.DataFrame,
    *,
    leverage: float | None = None,
    name: str = "signals",
) -> np.ndarray:
    """Check a strategy's target exposures against its data.

    Parameters
    ----------
    signals : pandas.Series, pandas.DataFrame, numpy.ndarray or list
        One target exposure per bar: a Series on ``data``'s index, a
        one-column DataFrame, or a 1-D array or list of ``len(data)`` values.
        bool, int and float values are accepted; NaN means flat.
    data : pandas.DataFrame
        The validated market data the signals were computed from.
    leverage : float, optional
        The largest absolute exposure allowed; the limit is
        ``max(1, leverage)``.
    name : str, default "signals"
        How error messages call the signals.

    Returns
    -------
    numpy.ndarray
        A new float64 array of ``len(data)`` exposures, NaN replaced by 0.

    Raises
    ------
    DataError
        The index or length does not match ``data``, a value is infinite,
        not numeric, or beyond the leverage limit.
    TypeError
        ``signals`` is none of the accepted types.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=3)
    >>> data = pd.DataFrame({"Open": [1.0] * 3, "High": [1.0] * 3,
    ...                      "Low": [1.0] * 3, "Close": [1.0] * 3}, index=idx)
    >>> validate_signals(pd.Series([True, False, None], index=idx), data)
    array([1., 0., 0.])
    >>> validate_signals([0.5, 2.0, -1.0], data, leverage=2)
    array([ 0.5,  2. , -1. ])
    """
    values = signal_exposures(signals, data.index, leverage=leverage, name=name)
    return np.array(values, dtype=np.float64)  # ours to own, never a view


def signal_exposures(
    signals: pd.Series | pd.DataFrame | np.ndarray | Sequence[float],
    index: pd.Index,
    *,
    leverage: float | None = None,
    name: str = "signals",
) -> np.ndarray:
    """:func:`validate_signals` for the simulator: the same checks, maybe no copy.

    Returns the signals' own float64 values when they need no fixing (a view of
    the Series or the array itself): the caller only reads them. Otherwise a new
    array, NaN replaced by 0 and a rounding error above the limit clipped.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=3)
    >>> signal_exposures(pd.Series([1.0, float("nan"), 0.5], index=idx), idx)
    array([1. , 0. , 0.5])
    """
    limit = _leverage_limit(leverage)
    if isinstance(signals, pd.DataFrame):
        if signals.shape[1] != 1:
            raise DataError(
                f"{name} is a DataFrame with {signals.shape[1]} columns; return "
                "one column (or a Series) of target exposures"
            )
        signals = signals.iloc[:, 0]
    if isinstance(signals, pd.Series):
        if signals.index is not index and not signals.index.equals(index):
            _index_mismatch(signals.index, index, name)
        values = _series_floats(signals, name)
    elif isinstance(signals, (np.ndarray, list, tuple)):
        values = _array_floats(signals, name)
        if len(values) != len(index):
            raise DataError(
                f"{name} has {len(values)} values but the data has {len(index)} "
                "bars (length mismatch); return one target exposure per bar"
            )
    else:
        raise TypeError(
            f"{name} must be a pandas Series, a one-column DataFrame, a 1-D "
            f"numpy array or a list; got {type(signals).__name__}"
        )
    # Two reductions prove no NaN (it propagates and fails both comparisons), no
    # inf and nothing beyond the limit, without a temporary array.
    if len(values) and (
        float(np.maximum.reduce(values)) <= limit and float(np.minimum.reduce(values)) >= -limit
    ):
        return values
    return _fix_signals(values, limit, leverage, index, name)


def _leverage_limit(leverage: float | None) -> float:
    if leverage is None:
        return 1.0
    if isinstance(leverage, bool) or not isinstance(leverage, (int, float, np.number)):
        raise ParamError(f"leverage must be a number > 0, got {leverage!r}")
    if not (np.isfinite(leverage) and leverage > 0):
        raise ParamError(f"leverage must be a finite number > 0, got {leverage!r}")
    return max(1.0, float(leverage))


def _series_floats(signals: pd.Series, name: str) -> np.ndarray:
    dtype = signals.dtype
    if dtype == _FLOAT:
        return signals.to_numpy()
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return signals.to_numpy(dtype=np.float64)
    if dtype.kind in "mMcSUV":
        _not_numeric(name, dtype, signals.dropna())
    try:
        # object, nullable and categorical dtypes: pd.NA / None become NaN
        return signals.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        _not_numeric(name, dtype, signals.dropna())
    raise AssertionError("unreachable")


def _array_floats(signals: np.ndarray | list[Any] | tuple[Any, ...], name: str) -> np.ndarray:
    array = np.asarray(signals)
    if array.ndim != 1:
        raise DataError(
            f"{name} must be 1-D (one target exposure per bar), got shape "
            f"{array.shape}"
        )
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":
        try:
            return np.array([np.nan if v is None else v for v in array], dtype=np.float64)
        except (TypeError, ValueError):
            pass
    _not_numeric(name, array.dtype, pd.Series(array).dropna())
    raise AssertionError("unreachable")


def _not_numeric(name: str, dtype: Any, sample: pd.Series) -> None:
    example = f", e.g. {sample.iloc[0]!r}" if len(sample) else ""
    raise DataError(
        f"{name} must hold numbers or booleans (target exposures), got dtype "
        f"{dtype}{example}"
    )


def _index_mismatch(got: pd.Index, expected: pd.Index, name: str) -> None:
    fix = (
        "Compute the signals from the `data` you were given, or align them "
        "with `signals.reindex(data.index)`."
    )
    if len(got) != len(expected):
        raise DataError(
            f"{name} has {len(got)} rows but the data has {len(expected)} bars "
            "(length mismatch); "
            f"their indexes must be equal. {fix}"
        )
    try:
        differs = np.flatnonzero(np.asarray(got != expected, dtype=bool))
        position = int(differs[0]) if len(differs) else 0
    except (TypeError, ValueError):  # e.g. tz-aware against tz-naive
        position = 0
    raise DataError(
        f"{name}'s index differs from the data's index, first at position "
        f"{position}: {got[position]!r} instead of {expected[position]!r}. {fix}"
    )


def _fix_signals(
    values: np.ndarray,
    limit: float,
    leverage: float | None,
    index: pd.Index,
    name: str,
) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    inf = np.flatnonzero(np.isinf(out))
    if len(inf):
        i = inf[0]
        raise DataError(
            f"{name} has {len(inf)} infinite value(s), first {out[i]} at "
            f"{_fmt_ts(index[i])} (position {i}); target exposures must be "
            "finite (use NaN or 0 for flat)."
        )
    out[np.isnan(out)] = 0.0  # NaN means flat
    size = np.abs(out)
    over = np.flatnonzero(size > limit * (1 + _SIGNAL_TOLERANCE))
    if len(over):
        i = over[0]
        needed = float(size.max())
        allowed = (
            f"the leverage limit of {limit:g}"
            if leverage is not None and leverage > 1
            else "1 (fully invested) without leverage"
        )
        raise DataError(
            f"{name} has {len(over)} value(s) beyond {allowed}, first "
            f"{out[i]:g} at {_fmt_ts(index[i])} (position {i}); pass "
            f"leverage={needed:g} to allow it, or scale the signals down."
        )
    # values a rounding error above the limit: clip them to it
    np.clip(out, -limit, limit, out=out)
    return out

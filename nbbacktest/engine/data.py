"""Validate OHLCV market data: one frame, or a universe of them.

Market data is a :class:`pandas.DataFrame` with a strictly increasing
:class:`~pandas.DatetimeIndex` and float64 columns ``Open``, ``High``, ``Low``,
``Close`` (``Volume`` optional). A mapping ``{symbol: DataFrame}`` is a
*universe*. Everything here needs only numpy and pandas. Files are read in
:mod:`nbbacktest.engine.loading`, signals checked in :mod:`nbbacktest.engine.signals`.

Validation runs before every backtest, so a frame that is already canonical is
checked with a handful of vectorised comparisons and returned as is; anything
that needs fixing produces a new frame (the caller's frame is never modified).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from nbbacktest.engine.caches import IdentityCache, scratch_row
from nbbacktest.engine.snapshots import FrameSnapshot
from nbbacktest.errors import DataError, NbbacktestWarning

__all__ = [
    "OHLC",
    "Universe",
    "is_universe",
    "validate_data",
    "validate_ohlcv",
]

OHLC: tuple[str, ...] = ("Open", "High", "Low", "Close")
Universe = Mapping[str, pd.DataFrame]

_VOLUME = "Volume"
# lower-case name -> canonical name, for case-insensitive matching
_CANONICAL: dict[str, str] = {c.lower(): c for c in (*OHLC, _VOLUME)}
_DATE_NAMES = ("date", "datetime", "time", "timestamp")
_FLOAT = np.dtype(np.float64)
_SHOW = 3  # how many offending timestamps an error message lists
# columns Index -> (name -> position, canonical names in canonical order)
_COLUMNS = IdentityCache(kept=256)


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
        for symbol in universe_symbols(data, name):
            frame = data[symbol]
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


def universe_symbols(mapping: Mapping[Any, Any], name: str) -> list[str]:
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
    frame: pd.DataFrame, name: str = "data", date_column: str | None = None, *,
    remember: bool = False,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """:func:`validate_ohlcv`, plus the frame's float64 values when it had them at hand.

    The values (see :func:`float_values`) save the simulator a second look at the
    frame; None when the frame is not a single float64 block.

    ``remember=True`` (what ``backtest()`` asks) keeps a frame that had to be rebuilt
    (renamed, re-indexed, converted) for the next call on the same frame object,
    until the frame changes (see :class:`~nbbacktest.engine.snapshots.FrameSnapshot`):
    each call then returns a new shallow copy of it after a comparison (about
    0.15 ms on 20,000 bars of six columns) instead of a rebuild (1 to 4 ms).

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
                o, h, lo, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
                _check_values(o, h, lo, c, frame.index, name)
                return frame, values
        else:
            # canonical names among other columns: still nothing to rebuild
            rename = _column_mapping(frame, name)
            if all(k == v for k, v in rename.items()):
                cols = {c: frame[c] for c in rename}
                if all(col.dtype == _FLOAT for col in cols.values()):
                    o, h, lo, c = (cols[k].to_numpy() for k in OHLC)
                    _check_values(o, h, lo, c, frame.index, name)
                    return frame, None
    if remember:
        return _remembered(frame, name, date_column)
    return _normalise(frame, name, date_column), None


class _Rebuilt(NamedTuple):
    """A frame that validation rebuilt, and what it was rebuilt from."""

    date_column: str | None
    source: FrameSnapshot
    frame: pd.DataFrame  # never handed out: callers get shallow copies
    values: np.ndarray | None  # read-only


def _remembered(
    frame: pd.DataFrame, name: str, date_column: str | None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """:func:`_normalise`, once per frame object until the frame changes."""
    slot = _REBUILT.get(frame, _empty_slot)
    seen: _Rebuilt | None = slot[0]
    if seen is not None and seen.date_column == date_column and seen.source.matches(frame):
        return seen.frame.copy(deep=False), seen.values
    # Taken first: a change made while validating then shows as a change next time.
    source = FrameSnapshot.of(frame, _REMEMBER_MAX_BYTES)
    out = _normalise(frame, name, date_column)
    values = float_values(out)
    if values is not None:
        values.flags.writeable = False  # shared by every later call
    slot[0] = None if source is None else _Rebuilt(date_column, source, out, values)
    # A copy, so that writes to what the caller gets (copy-on-write) never reach ``out``.
    return out.copy(deep=False), values


def _empty_slot(frame: pd.DataFrame) -> list[_Rebuilt | None]:
    return [None]


#: Frames remembered at once: a loop over a few symbols' frames stays fast; each keeps
#: a copy of its source's values (see FrameSnapshot), so the bound is on memory too.
_REBUILT = IdentityCache(kept=8)
#: Larger frames are validated on every call: their rebuild is a small part of a
#: backtest on that many bars, and a second copy of them costs memory that counts.
_REMEMBER_MAX_BYTES = 32 << 20


def float_values(frame: pd.DataFrame, *, interleave: bool = True) -> np.ndarray | None:
    """All columns as one float64 array when every column already is float64, else None.

    Under copy-on-write this is a view of the frame's single block: no copy. A frame
    of several blocks (one per column, as a dict builds it) is interleaved into a new
    array, unless ``interleave=False``: then None, and the caller takes the columns'
    own arrays (what an engine does: a copy of the shared data would stay with it).
    """
    values = frame.to_numpy()
    if values.dtype != _FLOAT or (values.flags.writeable and not interleave):
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
        found = find_date_column(frame, date_column, name)
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
        shown = ", ".join(format_timestamp(t) for t in dup.unique()[:_SHOW])
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
    o, h, lo, c = (out[k].to_numpy() for k in OHLC)
    _check_values(o, h, lo, c, out.index, name)
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


def find_date_column(frame: pd.DataFrame, date_column: str | None, name: str) -> Any:
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


def format_timestamp(ts: Any) -> str:
    ts = pd.Timestamp(ts)
    if ts.tz is None and ts == ts.normalize():
        return ts.strftime("%Y-%m-%d")
    return str(ts)


def _check_values(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    index: pd.Index,
    name: str,
) -> None:
    """Raise one DataError for the first fault found in the OHLC prices."""
    # 0 < Low <= min(O, C) <= max(O, C) <= High < inf proves all the rest, checked
    # as four reductions over one scratch row: between finite values a difference
    # is >= 0 exactly when the comparison holds, and NaN (in a price, or from
    # inf - inf) propagates through minimum, maximum and subtract and fails them.
    gap = scratch_row(len(o))
    np.minimum(o, c, out=gap)
    np.subtract(gap, lo, out=gap)
    if float(np.minimum.reduce(gap)) >= 0.0:
        np.maximum(o, c, out=gap)
        np.subtract(h, gap, out=gap)
        if (
            float(np.minimum.reduce(gap)) >= 0.0
            and float(np.minimum.reduce(lo)) > 0.0
            and float(np.maximum.reduce(h)) < math.inf
        ):
            return
    _diagnose(dict(zip(OHLC, (o, h, lo, c))), index, name)


def _where(mask_by_column: dict[str, np.ndarray], index: pd.Index) -> str:
    parts = []
    for col, mask in mask_by_column.items():
        rows = np.flatnonzero(mask)
        if len(rows):
            more = ", ..." if len(rows) > _SHOW else ""
            stamps = ", ".join(format_timestamp(index[i]) for i in rows[:_SHOW])
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
    o, h, lo, c = (cols[k] for k in OHLC)
    bad = np.flatnonzero(h < lo)
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{name} has {len(bad)} bar(s) with High < Low, first at "
            f"{format_timestamp(index[i])} (High={h[i]:g}, Low={lo[i]:g}). Check that the "
            "High and Low columns are not swapped, or strip those rows."
        )
    outside = {"Open": (o < lo) | (o > h), "Close": (c < lo) | (c > h)}
    rows = np.flatnonzero(outside["Open"] | outside["Close"])
    if len(rows):
        i = rows[0]
        which = " and ".join(k for k, m in outside.items() if m.any())
        raise DataError(
            f"{name} has {len(rows)} bar(s) with {which} outside [Low, High], "
            f"first at {format_timestamp(index[i])} (Open={o[i]:g}, High={h[i]:g}, "
            f"Low={lo[i]:g}, Close={c[i]:g}). Fix those rows, e.g. "
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

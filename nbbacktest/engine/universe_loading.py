"""Load a universe of many symbols from the shapes that price data comes in.

:func:`load_universe` reads each of these into one
:class:`~nbbacktest.engine.universe.Universe`:

===============  =====================================================================
shape            what it is
===============  =====================================================================
long table       columns date, symbol, open, high, low, close[, volume] (any case; the
                 date may be the index): a DataFrame, a ``.csv``/``.csv.gz`` or a
                 ``.parquet``/``.pq`` file
wide frame       columns a 2-level MultiIndex of (field, symbol) or (symbol, field):
                 what ``yfinance.download(["AAPL", "MSFT"])`` returns
folder           one ``.csv``/``.csv.gz``/``.parquet``/``.pq`` file per symbol, named
                 after it (``AAPL.csv``), each read with :func:`~nbbacktest.load_ohlcv`
Excel workbook   one sheet per symbol, named after it (``.xlsx``, ``.xlsm``, ``.xls``,
                 ``.ods``); needs the ``excel`` extra (python-calamine)
mapping          ``{symbol: DataFrame}``, or a :class:`Universe` (passed through)
===============  =====================================================================

Every fault in the data is one :class:`~nbbacktest.errors.DataError` that names the
symbol and where the fault is: duplicated (date, symbol) rows, a symbol with no rows
(or no prices), bars of different frequencies, a missing field, and each fault
:func:`~nbbacktest.engine.data.validate_ohlcv` finds in one symbol's prices (NaN,
non-positive, High < Low, ...), named ``f"{source}[{symbol!r}]"``. Rows are counted
as a reader finds them: lines of a CSV file and rows of a sheet counting the header as
1, 0-based positions in a DataFrame or a Parquet file.

This module picks the reader for a source and checks and aligns what it found; the
readers of each shape are in :mod:`~nbbacktest.engine.universe_formats`.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.data import find_date_column, format_timestamp, universe_symbols, validated_values
from nbbacktest.engine.universe import Universe
from nbbacktest.engine.universe_formats import (
    CSV_LINES,
    EXCEL_SUFFIXES,
    POSITIONS,
    REQUIRED,
    TABLE_SUFFIXES,
    Bars,
    Rows,
    pick,
    read_folder,
    read_table,
    read_wide,
    read_workbook,
    refuse,
    suffix_of,
)
from nbbacktest.errors import DataError

__all__ = ["load_universe"]

UniverseSource: TypeAlias = str | os.PathLike[str] | pd.DataFrame | Mapping[str, pd.DataFrame] | Universe

#: A symbol needs this many bars before its median spacing counts: with fewer, one
#: weekend or holiday is the median of a daily symbol's spacings.
_MIN_BARS_FOR_SPACING = 5
#: Median spacings this far apart (or more) are two frequencies: daily against
#: weekly or hourly, 1-minute against 5-minute. Closer ones are one frequency with
#: gaps (a thinly traded symbol); a symbol that trades on fewer than half of the
#: days is rare enough to be worth the question.
_FREQUENCY_RATIO = 2.0


def load_universe(
    source: UniverseSource,
    *,
    symbols: str | Iterable[str] | None = None,
    date_column: str | None = None,
    symbol_column: str | None = None,
    sheet_name: str | None = None,
) -> Universe:
    """Load prices of many symbols into one :class:`~nbbacktest.engine.universe.Universe`.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame, Mapping or Universe
        A long table (columns date, symbol, open, high, low, close and optionally
        volume, any case; the date may be the index) as a DataFrame, a ``.csv``,
        ``.csv.gz``, ``.parquet`` or ``.pq`` file; a wide DataFrame whose columns
        are (field, symbol) or (symbol, field) pairs, as ``yfinance.download``
        returns ("Adj Close" is ignored); a folder of one CSV or Parquet file per
        symbol (the symbol is the file name without its suffix); an Excel workbook
        (``.xlsx``, ``.xlsm``, ``.xls``, ``.ods``) of one sheet per symbol (the
        sheet name); a mapping ``{symbol: DataFrame}``; or a Universe.
    symbols : str or iterable of str, optional
        Keep only these symbols, in this order; only they are read from a folder
        or a workbook. By default every symbol: sorted for a long table and a
        folder, in column order for a wide frame, in sheet order for a workbook,
        in the mapping's order for a mapping.
    date_column : str, optional
        The column of dates, when it is none of date, datetime, time or timestamp
        (any case) and not the index.
    symbol_column : str, optional
        A long table's column of symbols, when it is none of symbol, ticker,
        asset, instrument or security (any case).
    sheet_name : str, optional
        Read this one sheet of an Excel workbook as a long table, instead of one
        sheet per symbol.

    Returns
    -------
    Universe
        Every symbol aligned on the union of their bar times (NaN where a symbol
        has no bar), the index named ``Date``.

    Raises
    ------
    DataError
        One error per fault, naming the symbol and its row or date: duplicated
        (date, symbol) rows, a symbol with no rows or no prices, bar frequencies
        that differ between symbols, a missing field (naming the columns found),
        NaN, infinite or non-positive prices, an unknown symbol in ``symbols``
        (with a did-you-mean hint), an unsupported file type.
    FileNotFoundError
        ``source`` is a path to nothing.
    ImportError
        An Excel workbook without python-calamine installed (``pip install
        "nbbacktest[excel]"``), or a Parquet file without pyarrow.
    TypeError
        ``source`` is none of the accepted types.
    ValueError
        ``symbol_column`` or ``sheet_name`` given for a source that has none.

    Examples
    --------
    A long table, here a DataFrame (a CSV or Parquet file reads the same):

    >>> import pandas as pd
    >>> long = pd.DataFrame({
    ...     "date": ["2024-01-02", "2024-01-03", "2024-01-03", "2024-01-04"],
    ...     "symbol": ["AAA", "AAA", "BBB", "BBB"],
    ...     "open": [10.0, 10.5, 20.0, 21.0], "high": [11.0, 11.0, 21.0, 22.0],
    ...     "low": [9.5, 10.0, 19.5, 20.5], "close": [10.5, 10.8, 20.5, 21.5]})
    >>> universe = load_universe(long)
    >>> universe
    <Universe 2 symbols x 3 bars, 2024-01-02 to 2024-01-04>
    >>> universe.close  # doctest: +NORMALIZE_WHITESPACE
    symbol       AAA   BBB
    Date
    2024-01-02  10.5   NaN
    2024-01-03  10.8  20.5
    2024-01-04   NaN  21.5

    A wide frame of (field, symbol) columns, as ``yfinance.download`` returns:

    >>> wide = long.pivot(index="date", columns="symbol")
    >>> wide.columns[:2].tolist()
    [('open', 'AAA'), ('open', 'BBB')]
    >>> load_universe(wide).close.equals(universe.close)
    True

    Faults name the symbol and the row:

    >>> load_universe(pd.concat([long, long.iloc[[1]]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nbbacktest.errors.DataError: data has 1 duplicated ... 'AAA' on 2024-01-03, at row 1 and row 4. ...
    >>> load_universe(long, symbols=["AAA", "BBC"])
    Traceback (most recent call last):
    ...
    nbbacktest.errors.DataError: symbol 'BBC' is not in data. Did you mean: BBB? (2 symbols: AAA, BBB)
    """
    wanted = _wanted(symbols)
    if isinstance(source, Universe):
        refuse("symbol_column", symbol_column, "a Universe")
        refuse("sheet_name", sheet_name, "a Universe")
        if wanted is None:
            return source
        return source.select(pick([str(s) for s in source.symbols], wanted, "data"))
    if isinstance(source, pd.DataFrame):
        refuse("sheet_name", sheet_name, "a DataFrame")
        return _from_frame(source, "data", POSITIONS, wanted, date_column, symbol_column)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), wanted, date_column, symbol_column, sheet_name)
    if isinstance(source, Mapping):
        refuse("symbol_column", symbol_column, "a mapping {symbol: DataFrame}")
        refuse("sheet_name", sheet_name, "a mapping {symbol: DataFrame}")
        return _from_mapping(source, wanted, date_column)
    raise TypeError(
        "source must be a path (str or os.PathLike) to a CSV or Parquet file, a folder of"
        " them or an Excel workbook; a pandas DataFrame (a long table or (field, symbol)"
        f" columns); a mapping {{symbol: DataFrame}}; or a Universe; got {type(source).__name__}"
    )


# ------------------------------------------------------------------ arguments


def _wanted(symbols: str | Iterable[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        return [symbols]
    if not isinstance(symbols, Iterable):
        raise TypeError(f"symbols must be a str or a list of str, got {type(symbols).__name__}")
    out = list(dict.fromkeys(symbols))
    bad = [s for s in out if not isinstance(s, str)]
    if bad:
        raise TypeError(f"symbols must be str, got {bad[0]!r} ({type(bad[0]).__name__})")
    if not out:
        raise DataError("symbols is empty; name at least one symbol, or pass symbols=None for all")
    return out


# ------------------------------------------------------------------ sources


def _from_path(
    path: Path, wanted: list[str] | None, date_column: str | None,
    symbol_column: str | None, sheet_name: str | None,
) -> Universe:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or folder to load a universe from",
                                str(path))
    source = f"{'folder' if path.is_dir() else 'file'} {str(path)!r}"
    if path.is_dir():
        refuse("symbol_column", symbol_column, source)
        refuse("sheet_name", sheet_name, source)
        return _assemble(read_folder(path, source, wanted, date_column))
    suffix = suffix_of(path.name, (*TABLE_SUFFIXES, *EXCEL_SUFFIXES))
    if suffix in EXCEL_SUFFIXES:
        return _assemble(read_workbook(path, wanted, date_column, symbol_column, sheet_name))
    refuse("sheet_name", sheet_name, source)
    if suffix is None:
        found = "".join(path.suffixes) or "no suffix"
        raise DataError(
            f"{source}: unsupported file type ({found}); load_universe reads "
            f"{', '.join(TABLE_SUFFIXES + EXCEL_SUFFIXES)} files and folders of "
            f"{', '.join(TABLE_SUFFIXES)} files. Load other formats with pandas and pass the DataFrame."
        )
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except ImportError as e:
            raise ImportError(
                f"reading {str(path)!r} needs pyarrow: pip install 'nbbacktest[parquet]'"
            ) from e
        return _from_frame(frame, source, POSITIONS, wanted, date_column, symbol_column)
    try:
        frame = pd.read_csv(path)  # compression inferred from a .gz suffix
    except pd.errors.EmptyDataError:
        raise DataError(f"{source} is empty: it has no header and no rows") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source} is not UTF-8 text ({e.reason}); read it with pandas, e.g."
            " pd.read_csv(path, encoding='latin-1'), and pass the DataFrame"
        ) from e
    return _from_frame(frame, source, CSV_LINES, wanted, date_column, symbol_column)


def _from_frame(
    frame: pd.DataFrame, source: str, rows: Rows, wanted: list[str] | None,
    date_column: str | None, symbol_column: str | None,
) -> Universe:
    if isinstance(frame.columns, pd.MultiIndex):
        refuse("symbol_column", symbol_column, f"{source} (a wide frame: its symbols are a column level)")
        return _assemble(read_wide(frame, source, wanted, date_column))
    return _assemble(read_table(frame, source, rows, wanted, date_column, symbol_column))


def _from_mapping(mapping: Mapping[str, Any], wanted: list[str] | None,
                  date_column: str | None) -> Universe:
    frames: dict[str, pd.DataFrame] = {}
    for symbol in pick(universe_symbols(mapping, "data"), wanted, "data"):
        frame = mapping[symbol]
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"data[{symbol!r}] must be a pandas DataFrame, got {type(frame).__name__}")
        frames[symbol] = frame
    return _assemble(Bars(frames, "data", date_column))


# ------------------------------------------------------------------ assembly


def _assemble(found: Bars) -> Universe:
    """Check every symbol's frame, their frequencies, and align them into a Universe."""
    frames, source, date_column, where = found
    checked: dict[str, pd.DataFrame] = {}
    for symbol, frame in frames.items():
        if len(frame) == 0 or len(frame.columns) == 0:
            place = f" (its {where} is empty)" if where else ""
            raise DataError(
                f"symbol {symbol!r} has no rows in {source}{place}; it needs at least one bar of"
                " open, high, low and close prices. Fill it, or leave it out with symbols=[...]"
            )
        _check_has_prices(frame, symbol, source)
        column = date_column
        if column is None and not isinstance(frame.index, pd.DatetimeIndex):
            column = _first_date_column(frame)
        checked[symbol] = validated_values(frame, f"{source}[{symbol!r}]", column)[0]
    _check_frequencies(checked, source)
    universe = Universe.from_frames(checked, name=source)
    index = pd.DatetimeIndex(universe.index.as_unit("ns"), name="Date")
    return Universe(universe.block, index, list(universe.symbols))


def _check_has_prices(frame: pd.DataFrame, symbol: str, source: str) -> None:
    """A symbol whose every price is NaN has no rows: say so, not 'N missing values'."""
    prices = [c for c in frame.columns if isinstance(c, str) and c.strip().lower() in REQUIRED]
    if len(prices) == len(REQUIRED) and frame[prices].isna().all().all():
        index = frame.index
        span = (f" ({format_timestamp(index[0])} to {format_timestamp(index[-1])})"
                if isinstance(index, pd.DatetimeIndex) else "")
        raise DataError(
            f"symbol {symbol!r} has no prices in {source}: all {len(frame)} of its rows{span} have"
            " NaN open, high, low and close. Fill them, or leave the symbol out with symbols=[...]"
        )


def _first_date_column(frame: pd.DataFrame) -> Any:
    """A sheet's first column when it holds dates and no column is named like a date."""
    if find_date_column(frame, None, "data") is not None:
        return None
    first = frame.columns[0]
    return first if pd.api.types.is_datetime64_any_dtype(frame[first].dtype) else None


def _check_frequencies(frames: Mapping[str, pd.DataFrame], source: str) -> None:
    """One bar frequency for all: each symbol's median bar spacing against the most common one."""
    spacing: dict[str, pd.Timedelta] = {}
    for symbol, frame in frames.items():
        if len(frame) >= _MIN_BARS_FOR_SPACING:
            stamps = cast(pd.DatetimeIndex, frame.index).as_unit("ns").asi8
            spacing[symbol] = pd.Timedelta(int(np.median(np.diff(stamps))), unit="ns")
    if len(spacing) < 2:
        return
    common = Counter(spacing.values()).most_common(1)[0][0]
    reference = next(s for s, step in spacing.items() if step == common)
    for symbol, step in spacing.items():
        if max(step, common) / min(step, common) >= _FREQUENCY_RATIO:
            coarse = max(step, common)
            fine = symbol if step < common else reference
            rule = _spacing(coarse, rule=True)
            raise DataError(
                f"{source} mixes bar frequencies: symbol {reference!r} has a bar every"
                f" {_spacing(common)} (its median spacing) but symbol {symbol!r} one every"
                f" {_spacing(step)}, from {format_timestamp(frames[symbol].index[0])}. A universe holds"
                f" one frequency: resample {fine!r}, e.g. frame.resample({rule!r}).agg({{'Open': 'first',"
                " 'High': 'max', 'Low': 'min', 'Close': 'last', 'Volume': 'sum'}).dropna(), or leave"
                " it out with symbols=[...]"
            )


def _spacing(step: pd.Timedelta, rule: bool = False) -> str:
    """``1 day``, ``4 hours``, ``5 minutes``: a spacing in words; or as a resample rule (``4h``)."""
    seconds = step.total_seconds()
    for unit, size, code in (("day", 86_400, "D"), ("hour", 3_600, "h"), ("minute", 60, "min"),
                             ("second", 1, "s")):
        count = seconds / size
        if count >= 1 and count == int(count):
            if rule:
                return f"{int(count)}{code}" if count != 1 else code
            return f"{int(count)} {unit}{'s' if count != 1 else ''}"
    return f"{int(seconds * 1e9)}ns" if rule else str(step)

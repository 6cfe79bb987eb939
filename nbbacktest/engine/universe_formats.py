"""The readers behind :func:`~nbbacktest.engine.universe_loading.load_universe`, one per shape.

Each reader takes one shape of price data (a long table, a wide frame of (field,
symbol) columns, a folder of one file per symbol, an Excel workbook of one sheet
per symbol) and returns what it found as :class:`Bars`: each symbol's bars, not yet
validated, and how to name them in messages. ``load_universe`` picks the reader,
then checks the bars and aligns them into a
:class:`~nbbacktest.engine.universe.Universe`. The argument checks both modules
share (:func:`pick`, :func:`refuse`) are here too, so that this module never
imports ``universe_loading``.

Every fault a reader finds is one :class:`~nbbacktest.errors.DataError` naming the
symbol and where the fault is (see ``universe_loading``).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.data import OHLC, find_date_column, format_timestamp
from nbbacktest.engine.loading import load_ohlcv
from nbbacktest.errors import DataError, did_you_mean

__all__ = [
    "CSV_LINES", "EXCEL_SUFFIXES", "POSITIONS", "REQUIRED", "TABLE_SUFFIXES", "Bars", "Rows",
    "pick", "read_folder", "read_table", "read_wide", "read_workbook", "refuse", "suffix_of",
]

_FIELDS = ("open", "high", "low", "close", "volume")  # lower case, in column order
REQUIRED = _FIELDS[:4]
# columns of a wide frame that are fields but not ours: yfinance's adjusted close
_IGNORED_FIELDS = frozenset({"adj close", "adj_close", "adjclose", "adjusted close"})
_SYMBOL_NAMES = ("symbol", "ticker", "asset", "instrument", "security")
_DATE_NAMES = ("date", "datetime", "time", "timestamp")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
_SHOW = 8  # how many names (symbols, columns) a message lists


class Rows(NamedTuple):
    """How a source numbers its rows in messages: ``f"{word} {position + first}"``."""

    word: str
    first: int

    def at(self, position: int) -> str:
        return f"{self.word} {int(position) + self.first}"


POSITIONS = Rows("row", 0)  # a DataFrame's or a Parquet file's 0-based positions
CSV_LINES = Rows("line", 2)  # line 1 is the header
_SHEET_ROWS = Rows("row", 2)  # row 1 is the header


class Bars(NamedTuple):
    """What a reader found: each symbol's bars, not yet validated, and how to name them."""

    frames: dict[str, pd.DataFrame]
    #: The source in messages: ``"data"``, ``"file '...'"``, ``"workbook '...'"``.
    source: str
    #: The frames' date column, where their dates are not the index.
    date_column: str | None = None
    #: What holds one symbol's bars (``"sheet"``), to say where an empty one is.
    where: str = ""


# ------------------------------------------------------------------ arguments


def refuse(argument: str, value: str | None, source: str) -> None:
    """A ValueError when ``argument`` (symbol_column or sheet_name) is given for a source without one."""
    if value is None:
        return
    what = {
        "symbol_column": "a long table (a DataFrame, a CSV or Parquet file, an Excel sheet named"
                         " by sheet_name)",
        "sheet_name": "an Excel workbook",
    }[argument]
    raise ValueError(f"{argument}={value!r} applies to {what} only, not to {source}")


def pick(available: list[str], wanted: list[str] | None, source: str) -> list[str]:
    """The symbols to load: all, or those asked for, each checked with a did-you-mean hint."""
    if wanted is None:
        return available
    known = set(available)
    for symbol in wanted:
        if symbol not in known:
            shown = ", ".join(available[:_SHOW]) + (", ..." if len(available) > _SHOW else "")
            hint = did_you_mean(symbol, available)
            raise DataError(
                f"symbol {symbol!r} is not in {source}{'.' + hint if hint else ''}"
                f" ({len(available)} symbols: {shown})"
            )
    return wanted


def suffix_of(name: str, suffixes: Iterable[str]) -> str | None:
    """The one of ``suffixes`` that ``name`` ends with (any case), or None."""
    lower = name.lower()
    return next((s for s in suffixes if lower.endswith(s)), None)


# ------------------------------------------------------------------ folders and workbooks


def read_folder(folder: Path, source: str, wanted: list[str] | None,
                date_column: str | None) -> Bars:
    """One file per symbol, named after it; each read with :func:`~nbbacktest.load_ohlcv`."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = suffix_of(path.name, TABLE_SUFFIXES)
        if suffix is None or not path.is_file() or path.name.startswith("."):
            continue
        symbol = path.name[: -len(suffix)]
        if symbol in files:
            raise DataError(
                f"{source} has two files for symbol {symbol!r}: {files[symbol].name!r} and"
                f" {path.name!r}; keep one of them"
            )
        files[symbol] = path
    if not files:
        raise DataError(
            f"{source} has no {', '.join(TABLE_SUFFIXES)} file; put one file of bars per"
            " symbol there, named after the symbol (e.g. AAPL.csv)"
        )
    frames: dict[str, pd.DataFrame] = {}
    for symbol in pick(list(files), wanted, source):
        path = files[symbol]
        try:
            frames[symbol] = cast(pd.DataFrame, load_ohlcv(path, date_column=date_column))
        except pd.errors.EmptyDataError:
            raise DataError(
                f"symbol {symbol!r} has no rows: file {str(path)!r} is empty (no header, no rows)."
                " Fill it, delete it, or leave the symbol out with symbols=[...]"
            ) from None
    return Bars(frames, source)


def read_workbook(
    path: Path, wanted: list[str] | None, date_column: str | None,
    symbol_column: str | None, sheet_name: str | None,
) -> Bars:
    """One sheet per symbol, named after it; or the one sheet ``sheet_name`` as a long table."""
    source = f"workbook {str(path)!r}"
    if importlib.util.find_spec("python_calamine") is None:
        raise ImportError(
            f"reading the Excel workbook {str(path)!r} needs python-calamine:"
            ' pip install "nbbacktest[excel]"'
        )
    if sheet_name is None:
        refuse("symbol_column", symbol_column, f"{source} read as one sheet per symbol")
    with pd.ExcelFile(path, engine="calamine") as book:
        sheets = [str(name) for name in book.sheet_names]
        if sheet_name is not None:
            if sheet_name not in sheets:
                raise DataError(
                    f"{source} has no sheet {sheet_name!r} (sheet_name).{did_you_mean(sheet_name, sheets)}"
                    f" Sheets: {', '.join(map(repr, sheets[:_SHOW]))}"
                )
            table = pd.read_excel(book, sheet_name=sheet_name)
            return read_table(table, f"sheet {sheet_name!r} of {source}", _SHEET_ROWS, wanted,
                              date_column, symbol_column)
        frames = {symbol: pd.read_excel(book, sheet_name=symbol) for symbol in pick(sheets, wanted, source)}
    return Bars(frames, source, date_column, where="sheet")


# ------------------------------------------------------------------ long tables


def read_table(
    frame: pd.DataFrame, source: str, rows: Rows, wanted: list[str] | None,
    date_column: str | None, symbol_column: str | None,
) -> Bars:
    """A long table: one row per (date, symbol), split into one frame per symbol.

    Examples
    --------
    >>> table = pd.DataFrame({"Date": ["2024-01-03", "2024-01-02", "2024-01-02"],
    ...                       "Ticker": ["BBB", "BBB", "AAA"], "Open": [2.0, 1.0, 5.0],
    ...                       "High": [2.0, 1.0, 5.0], "Low": [2.0, 1.0, 5.0],
    ...                       "Close": [2.0, 1.0, 5.0]})
    >>> found = read_table(table, "data", POSITIONS, None, None, None)
    >>> list(found.frames), found.frames["BBB"]["Close"].tolist()
    (['AAA', 'BBB'], [1.0, 2.0])
    """
    frame = _index_as_columns(frame, date_column)
    columns = list(frame.columns)
    if len(frame) == 0:
        raise DataError(f"{source} has no rows (columns {columns}); it needs one row per date and symbol")
    date = find_date_column(frame, date_column, source)
    if date is None:
        raise DataError(
            f"{source} has no date column (looked for {', '.join(_DATE_NAMES)} in any case, and a"
            f" DatetimeIndex); found columns {columns}. Pass date_column='...'"
        )
    symbol = _symbol_column(frame, symbol_column, source)
    fields = _table_fields(frame, source, exclude=(date, symbol))

    names = frame[symbol]
    missing = np.flatnonzero(names.isna().to_numpy())
    if wanted is None and len(missing):
        raise DataError(
            f"{source} has {len(missing)} row(s) with no symbol in column {symbol!r}, first at"
            f" {rows.at(missing[0])}; fill or drop them, e.g. `df.dropna(subset=[{symbol!r}])`"
        )
    # sorted: the same universe whatever the order of the table's rows
    codes, uniques = pd.factorize(names.map(str, na_action="ignore"), sort=True)
    available = [str(s) for s in uniques]
    picked = pick(available, wanted, source)
    code_of = {s: i for i, s in enumerate(available)}
    keep = np.flatnonzero(np.isin(codes, [code_of[s] for s in picked]))  # positions in the table
    codes = codes[keep]

    def where(i: int) -> str:
        return f"{rows.at(keep[i])} (symbol {str(names.iloc[keep[i]])!r})"

    dates = _to_dates(frame[date].iloc[keep], f"column {date!r}", source, where)
    stamps = dates.asi8
    _check_duplicates(stamps, codes, dates, available, source, rows, keep, (date, symbol))

    lean = pd.DataFrame({name: frame[column].iloc[keep].to_numpy() for name, column in fields.items()})
    groups = pd.Series(np.arange(len(keep))).groupby(codes, sort=False).indices
    frames: dict[str, pd.DataFrame] = {}
    for name in picked:
        at = np.asarray(groups[code_of[name]])
        ordered = at[np.argsort(stamps[at], kind="stable")]  # a table need not be in time order
        frames[name] = lean.iloc[ordered].set_axis(dates[ordered], axis=0)
    return Bars(frames, source)


def _index_as_columns(frame: pd.DataFrame, date_column: str | None) -> pd.DataFrame:
    """An index that holds data (dates, or (date, symbol) levels) as columns; positions kept."""
    index = frame.index
    if isinstance(index, pd.MultiIndex) or index.name is not None:
        if any(name is not None and name in frame.columns for name in index.names):
            return frame  # the same names as columns: the columns hold the data
        return frame.reset_index()
    if isinstance(index, pd.DatetimeIndex) and date_column is None:
        if find_date_column(frame, None, "data") is None:
            return frame.rename_axis("date").reset_index()
    return frame


def _symbol_column(frame: pd.DataFrame, symbol_column: str | None, source: str) -> Any:
    columns = list(frame.columns)
    if symbol_column is not None:
        for column in columns:
            if column == symbol_column or (isinstance(column, str)
                                           and column.strip().lower() == symbol_column.lower()):
                return column
        raise DataError(f"{source} has no column {symbol_column!r} (symbol_column); found columns {columns}")
    for column in columns:
        if isinstance(column, str) and column.strip().lower() in _SYMBOL_NAMES:
            return column
    raise DataError(
        f"{source} has no symbol column (looked for {', '.join(_SYMBOL_NAMES)} in any case); found"
        f" columns {columns}. Pass symbol_column='...'; for one instrument use nbb.load_ohlcv(...),"
        " and pass a folder for one file per symbol"
    )


def _table_fields(frame: pd.DataFrame, source: str, exclude: tuple[Any, ...]) -> dict[str, Any]:
    """Canonical field name (Open, ...) -> the table's column, matched in any case."""
    found: dict[str, Any] = {}
    for column in frame.columns:
        if column in exclude or not isinstance(column, str):
            continue
        key = column.strip().lower()
        if key in _FIELDS:
            field = key.capitalize()
            if field in found:
                raise DataError(f"{source} has two columns for field {key!r}: {found[field]!r} and"
                                f" {column!r}; drop one of them")
            found[field] = column
    missing = [f for f in REQUIRED if f.capitalize() not in found]
    if missing:
        raise DataError(
            f"{source} has no column for field(s) {', '.join(map(repr, missing))}; found columns"
            f" {list(frame.columns)}. A long table needs columns date, symbol, open, high, low and"
            " close (volume optional), in any case"
        )
    return {field: found[field] for field in (*OHLC, "Volume") if field in found}


def _to_dates(
    values: pd.Series, what: str, source: str, where: Callable[[int], str]
) -> pd.DatetimeIndex:
    """Parse dates, or one DataError naming the first row that is not one.

    ``what`` names the values (``"column 'date'"``, ``"the index"``); ``where(i)`` says
    where the i-th value is.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        # pd.to_datetime would read numbers as nanoseconds since 1970
        raise DataError(
            f"{source}: {what} holds numbers, not dates; pass date_column='...' naming the date"
            " column, or convert it with `pd.to_datetime(df[col], unit='s')`"
        )
    with warnings.catch_warnings():
        # pandas then parses element by element, which is what we want; its warning would
        # point at nbbacktest, not at the data
        warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
        try:
            dates = pd.DatetimeIndex(pd.to_datetime(values))
        except (ValueError, TypeError, OverflowError) as e:
            coerced = pd.to_datetime(values, errors="coerce")
            bad = np.flatnonzero(pd.isna(coerced) & values.notna().to_numpy())
            at = f" ({values.iloc[bad[0]]!r} at {where(bad[0])})" if len(bad) else ""
            raise DataError(
                f"{source}: could not parse {what} as dates{at}: {e}. Fix those rows, or parse"
                " the dates yourself with pd.to_datetime and pass the DataFrame"
            ) from e
    if dates.hasnans:
        bad = np.flatnonzero(dates.isna())
        raise DataError(
            f"{source} has {len(bad)} row(s) with no date in {what}, first at {where(bad[0])};"
            " drop them, e.g. `df.dropna(subset=[...])` naming the date column"
        )
    return dates.as_unit("ns")


def _check_duplicates(
    stamps: np.ndarray, codes: np.ndarray, dates: pd.DatetimeIndex, symbols: list[str],
    source: str, rows: Rows, keep: np.ndarray, columns: tuple[Any, Any],
) -> None:
    pairs = pd.DataFrame({"date": stamps, "symbol": codes})
    duplicated = pairs.duplicated().to_numpy()
    if not duplicated.any():
        return
    second = int(np.flatnonzero(duplicated)[0])
    first = int(np.flatnonzero((stamps == stamps[second]) & (codes == codes[second]))[0])
    date, symbol = columns
    raise DataError(
        f"{source} has {int(duplicated.sum())} duplicated (date, symbol) row(s): the first is symbol"
        f" {symbols[codes[second]]!r} on {format_timestamp(dates[second])}, at {rows.at(keep[first])}"
        f" and {rows.at(keep[second])}. Keep one row per date and symbol, e.g."
        f" `df.drop_duplicates([{date!r}, {symbol!r}], keep='last')`."
    )


# ------------------------------------------------------------------ wide frames


def read_wide(frame: pd.DataFrame, source: str, wanted: list[str] | None,
              date_column: str | None) -> Bars:
    """Columns of (field, symbol) or (symbol, field) pairs, one row per date."""
    columns = cast(pd.MultiIndex, frame.columns)
    if columns.nlevels != 2:
        raise DataError(
            f"{source} has {columns.nlevels} column levels; a wide frame has 2, (field, symbol)"
            " or (symbol, field), e.g. ('Close', 'AAPL')"
        )
    level = _field_level(columns, source)  # first: a frame of other columns says so
    frame = _wide_dates(frame, source, date_column)
    columns = cast(pd.MultiIndex, frame.columns)
    labels = list(dict.fromkeys(columns.get_level_values(1 - level)))
    by_name = {str(label): label for label in labels}
    frames: dict[str, pd.DataFrame] = {}
    for symbol in pick(list(by_name), wanted, source):
        part = frame.xs(by_name[symbol], axis=1, level=1 - level)
        fields: dict[str, Any] = {}
        for column in part.columns:
            key = str(column).strip().lower()
            if key in _FIELDS:
                if key.capitalize() in fields:
                    raise DataError(f"{source} has two columns for field {key!r} of symbol {symbol!r};"
                                    " drop one of them")
                fields[key.capitalize()] = column
        missing = [f for f in REQUIRED if f.capitalize() not in fields]
        if missing:
            raise DataError(
                f"{source} has no column for field(s) {', '.join(map(repr, missing))} of symbol"
                f" {symbol!r}; found fields {list(part.columns)} for it. A wide frame needs the fields"
                " open, high, low and close (any case; volume optional) for every symbol"
            )
        bars = pd.DataFrame({name: part[fields[name]].to_numpy()
                             for name in (*OHLC, "Volume") if name in fields}, index=part.index)
        # a wide frame pads each symbol to the union of dates: a row without any price is no bar
        bars = bars[bars[list(OHLC)].notna().any(axis=1).to_numpy()]
        if len(bars) == 0:
            raise DataError(
                f"symbol {symbol!r} has no rows in {source}: every one of its prices is NaN"
                " (a failed download?). Leave it out with symbols=[...]"
            )
        frames[symbol] = bars
    return Bars(frames, source)


def _field_level(columns: pd.MultiIndex, source: str) -> int:
    """Which of the two column levels holds the field names (Open, ..., Volume)."""
    known = {*_FIELDS, *_IGNORED_FIELDS}
    scores = []
    for level in (0, 1):
        values = {str(v).strip().lower() for v in columns.get_level_values(level)}
        scores.append((len(values & set(REQUIRED)), values <= known))
    # the level with more price fields; on a tie, the one holding nothing but fields
    best = max((0, 1), key=lambda level: (scores[level][0], scores[level][1], -level))
    if scores[best][0] == 0:
        shown = [list(dict.fromkeys(map(str, columns.get_level_values(i))))[:_SHOW] for i in (0, 1)]
        raise DataError(
            f"{source} has two column levels but neither holds the fields open, high, low, close"
            f" (any case): level 0 holds {shown[0]}, level 1 holds {shown[1]}. A wide frame's"
            " columns are (field, symbol) or (symbol, field) pairs, e.g. ('Close', 'AAPL')"
        )
    return best


def _wide_dates(frame: pd.DataFrame, source: str, date_column: str | None) -> pd.DataFrame:
    """A wide frame with its dates as the index (a ('Date', '') column moved there)."""
    for column in frame.columns:
        if date_column is not None:
            found = any(str(part).lower() == date_column.lower() for part in column)
        else:
            # ('Date', '') as a saved index comes back: the other level is empty
            found = any(isinstance(part, str) and part.strip().lower() in _DATE_NAMES for part in column) \
                and any(part is None or str(part) == "" or str(part).startswith("Unnamed") for part in column)
        if found:
            dates = _to_dates(frame[column], f"column {column!r}", source, POSITIONS.at)
            return frame.drop(columns=column).set_axis(dates, axis=0)
    if date_column is not None:
        raise DataError(f"{source} has no column {date_column!r} (date_column); found columns"
                        f" {list(frame.columns)[:_SHOW]}")
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame
    dates = _to_dates(frame.index.to_series(), "the index", source, POSITIONS.at)
    return frame.set_axis(dates, axis=0)

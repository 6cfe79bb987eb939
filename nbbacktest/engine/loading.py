"""Load OHLCV market data from CSV and Parquet files, DataFrames and mappings of them.

What comes back is validated (see :mod:`nbbacktest.engine.data`): a canonical
frame, or a dict ``{symbol: frame}`` for a universe.
"""

from __future__ import annotations

import codecs
import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nbbacktest.engine.data import find_date_column, universe_symbols, validated_values
from nbbacktest.errors import DataError

__all__ = ["load_ohlcv"]

_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


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
        return validated_values(source, "data", date_column)[0]
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, f"file {os.fspath(source)!r}", date_column, encoding)
    if isinstance(source, Mapping):
        symbols = universe_symbols(source, "data")
        out: dict[str, pd.DataFrame] = {}
        for symbol in symbols:
            value = source[symbol]
            name = f"data[{symbol!r}]"
            if isinstance(value, pd.DataFrame):
                out[symbol] = validated_values(value, name, date_column)[0]
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
        return validated_values(frame, name, date_column)[0]
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
            and find_date_column(frame, None, name) is not None
        ):
            date_column = first
    return validated_values(frame, name, date_column)[0]

"""Tests of nbbacktest.engine.universe_formats: load_universe's reader of each shape.

Each shape (a long DataFrame, CSV or Parquet table; a wide frame of (field, symbol)
columns; a folder of one file per symbol; an Excel workbook) read into the same
universe, ``symbols=`` and ``symbol_column=`` on them, and the faults a reader finds
(duplicated rows, missing fields, bad dates, empty files and sheets). The helpers
are test_universe_loading.py's.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbbacktest.engine.universe_formats as universe_formats
from nbbacktest.engine.universe import Universe
from nbbacktest.engine.universe_loading import load_universe
from nbbacktest.errors import DataError
from tests.test_universe_loading import assert_same, long_table, three_symbols, wide, write_workbook


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    return three_symbols()


@pytest.fixture
def expected(frames: dict[str, pd.DataFrame]) -> Universe:
    return Universe.from_frames(frames)


# ------------------------------------------------------------------ every format, one universe


def test_long_dataframe(frames: dict[str, pd.DataFrame], expected: Universe) -> None:
    table = long_table(frames)
    assert_same(load_universe(table), expected)
    # the date as the index, and (date, symbol) as a MultiIndex
    assert_same(load_universe(table.set_index("date")), expected)
    assert_same(load_universe(table.set_index(["date", "symbol"])), expected)
    # any case, and rows in any order
    shuffled = table.rename(columns=str.upper).sample(frac=1.0, random_state=0)
    assert_same(load_universe(shuffled), expected)


@pytest.mark.parametrize("name", ["prices.csv", "prices.csv.gz"])
def test_csv(frames: dict[str, pd.DataFrame], expected: Universe, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    long_table(frames).to_csv(path, index=False)
    assert_same(load_universe(path), expected)
    assert_same(load_universe(str(path)), expected)


def test_parquet(frames: dict[str, pd.DataFrame], expected: Universe, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "prices.parquet"
    long_table(frames).to_parquet(path)
    assert_same(load_universe(path), expected)
    # a wide frame saved as Parquet keeps its column levels
    wide(frames).to_parquet(tmp_path / "wide.pq")
    assert_same(load_universe(tmp_path / "wide.pq"), expected)


@pytest.mark.parametrize("field_first", [True, False], ids=["field-symbol", "symbol-field"])
def test_wide_multiindex(frames: dict[str, pd.DataFrame], expected: Universe, field_first: bool) -> None:
    table = wide(frames, field_first)
    assert table.isna().any().any()  # padded to the union of dates, as yfinance does
    assert ("Adj Close", "AAA") in table.columns or ("AAA", "Adj Close") in table.columns
    assert_same(load_universe(table), expected)


def test_folder(frames: dict[str, pd.DataFrame], expected: Universe, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frames["AAA"].to_csv(tmp_path / "AAA.csv")
    frames["BBB"].to_parquet(tmp_path / "BBB.parquet")
    frames["CCC"].rename(columns=str.lower).to_csv(tmp_path / "CCC.csv.gz")
    (tmp_path / "README.txt").write_text("not a price file")
    assert_same(load_universe(tmp_path), expected)
    assert load_universe(str(tmp_path), symbols=["CCC", "AAA"]).symbols.tolist() == ["CCC", "AAA"]


def test_excel(frames: dict[str, pd.DataFrame], expected: Universe, tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    write_workbook(path, frames)
    assert_same(load_universe(path), expected)
    assert load_universe(path, symbols="BBB").symbols.tolist() == ["BBB"]


def test_excel_long_sheet(frames: dict[str, pd.DataFrame], expected: Universe, tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    write_workbook(path, {"notes": pd.DataFrame({"x": [1]}), "prices": long_table(frames)})
    assert_same(load_universe(path, sheet_name="prices"), expected)
    with pytest.raises(DataError, match=r"has no sheet 'price' \(sheet_name\)\. Did you mean: prices\?"):
        load_universe(path, sheet_name="price")


def test_excel_needs_calamine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.xlsx"
    path.write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(universe_formats.importlib.util, "find_spec",
                        lambda name, *a: None if name == "python_calamine" else real(name, *a))
    with pytest.raises(ImportError, match=re.escape('pip install "nbbacktest[excel]"')):
        load_universe(path)


def test_custom_column_names(frames: dict[str, pd.DataFrame], expected: Universe) -> None:
    table = long_table(frames).rename(columns={"date": "when", "symbol": "code"})
    assert_same(load_universe(table, date_column="when", symbol_column="CODE"), expected)
    with pytest.raises(DataError, match=r"no symbol column \(looked for symbol, ticker.*found columns"
                                        r" \['when', 'code'"):
        load_universe(table, date_column="when")
    with pytest.raises(ValueError, match=r"symbol_column='code' applies to a long table"):
        load_universe(wide(frames), symbol_column="code")


# ------------------------------------------------------------------ symbols=


def test_symbols_keeps_those_in_order(frames: dict[str, pd.DataFrame]) -> None:
    universe = load_universe(long_table(frames), symbols=["CCC", "AAA"])
    assert universe.symbols.tolist() == ["CCC", "AAA"]
    assert universe.index[0] == pd.Timestamp("2024-01-01")
    assert load_universe(wide(frames), symbols="BBB").shape == (20, 1)


def test_unknown_symbol_in_a_folder(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    for symbol, frame in frames.items():
        frame.to_csv(tmp_path / f"{symbol}.csv")
    with pytest.raises(DataError, match=r"symbol 'AAB' is not in folder '.*'\. Did you mean: AAA\?"):
        load_universe(tmp_path, symbols=["AAB"])


# ------------------------------------------------------------------ faults


def test_duplicated_date_symbol_rows(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    table = long_table(frames)
    first = int(np.flatnonzero((table["symbol"] == "BBB") & (table["date"] == "2024-01-12"))[0])
    doubled = pd.concat([table, table.iloc[[first, first, 0]]], ignore_index=True)
    path = tmp_path / "prices.csv"
    doubled.to_csv(path, index=False)
    last = len(table)  # the first copy's position
    with pytest.raises(DataError, match=rf"data has 3 duplicated \(date, symbol\) row\(s\): the first"
                                        rf" is symbol 'BBB' on 2024-01-12, at row {first} and row {last}\."):
        load_universe(doubled)
    # a CSV file counts lines, the header being line 1
    with pytest.raises(DataError, match=rf"file '.*prices\.csv' has 3 duplicated .* symbol 'BBB' on"
                                        rf" 2024-01-12, at line {first + 2} and line {last + 2}\."):
        load_universe(path)


def test_an_empty_sheet_or_file(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    write_workbook(path, {"AAA": frames["AAA"], "BBB": pd.DataFrame()})
    with pytest.raises(DataError, match=r"symbol 'BBB' has no rows in workbook '.*prices\.xlsx'"
                                        r" \(its sheet is empty\)"):
        load_universe(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    frames["AAA"].to_csv(folder / "AAA.csv")
    (folder / "BBB.csv").write_text("")
    with pytest.raises(DataError, match=r"symbol 'BBB' has no rows: file '.*BBB\.csv' is empty"):
        load_universe(folder)
    (folder / "BBB.csv").write_text("Date,Open,High,Low,Close\n")  # a header, no rows
    with pytest.raises(DataError, match=r"file '.*BBB\.csv' is empty \(0 rows\)"):
        load_universe(folder)
    with pytest.raises(DataError, match=r"symbol 'BBB' has no rows in data"):
        load_universe({"AAA": frames["AAA"], "BBB": frames["BBB"].iloc[:0]})


def test_missing_field(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    long_table(frames).drop(columns="low").to_csv(path, index=False)
    with pytest.raises(DataError, match=r"file '.*prices\.csv' has no column for field\(s\) 'low'; found"
                                        r" columns \['date', 'symbol', 'open', 'high', 'close', 'volume'\]"):
        load_universe(path)
    table = wide(frames).drop(columns=[("Close", "CCC")])
    with pytest.raises(DataError, match=r"data has no column for field\(s\) 'close' of symbol 'CCC'; found"
                                        r" fields \['Adj Close', 'High', 'Low', 'Open', 'Volume'\]"):
        load_universe(table)
    frames["BBB"] = frames["BBB"].drop(columns="High")
    with pytest.raises(DataError, match=r"data\['BBB'\] is missing column\(s\) 'High'; found columns"):
        load_universe(frames)


def test_bad_rows_of_a_long_table(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    table = long_table(frames).astype({"date": object})
    table.loc[5, "date"] = "not a date"
    path = tmp_path / "prices.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"could not parse column 'date' as dates \('not a date' at line 7"
                                        rf" \(symbol '{table.loc[5, 'symbol']}'\)\)"):
        load_universe(path)
    table = long_table(frames)
    table.loc[4, "symbol"] = None
    with pytest.raises(DataError, match=r"data has 1 row\(s\) with no symbol in column 'symbol', first at row 4"):
        load_universe(table)
    assert load_universe(table, symbols=["CCC"]).shape == (25, 1)  # rows of other symbols are not read

"""Tests of nbbacktest.engine.loading: CSV and Parquet files, DataFrames and mappings of them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.loading import load_ohlcv
from nbbacktest.errors import DataError


def make_frame(n: int = 10, start: str = "2024-01-01", freq: str = "D") -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=freq, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Volume": np.full(n, 1000.0),
        },
        index=index,
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()



def test_csv_round_trip(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    frame.to_csv(path)
    out = load_ohlcv(path)
    pd.testing.assert_frame_equal(out, frame, check_freq=False, check_index_type=False)
    assert load_ohlcv(str(path)).index.equals(frame.index)


def test_csv_gz_round_trip(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.CSV.GZ"
    frame.rename(columns=str.lower).to_csv(path, compression="gzip")
    out = load_ohlcv(path)
    pd.testing.assert_frame_equal(out, frame, check_freq=False, check_index_type=False)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(frame: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / f"prices{suffix}"
    frame.to_parquet(path)
    out = load_ohlcv(path)
    pd.testing.assert_frame_equal(out, frame, check_freq=False, check_index_type=False)
    # a date column instead of an index is found too
    frame.reset_index().to_parquet(path)
    assert load_ohlcv(path).index.equals(frame.index)


def test_csv_date_column_option(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    raw = frame.reset_index().rename(columns={"Date": "When"})
    raw.insert(0, "Ticker", "AAA")
    raw.to_csv(path, index=False)
    out = load_ohlcv(path, date_column="When")
    assert out.index.equals(frame.index)
    assert out["Ticker"].tolist() == ["AAA"] * len(frame)
    with pytest.raises(DataError, match=r"could not parse column 'Ticker' as dates"):
        load_ohlcv(path)


def test_csv_with_saved_range_index_finds_the_date_column(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    frame.reset_index().to_csv(path)  # first column: 0, 1, 2, ...
    assert load_ohlcv(path).index.equals(frame.index)


def test_csv_errors_name_the_file(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    frame.drop(columns="High").to_csv(path)
    with pytest.raises(DataError, match=rf"^file {re.escape(repr(str(path)))} is missing column\(s\) 'High'"):
        load_ohlcv(path)


@pytest.mark.parametrize("name", ["prices.csv", "prices.csv.gz"])
def test_csv_not_in_utf8_names_the_file_and_the_encoding(
    frame: pd.DataFrame, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    frame.assign(Exchange="Bourse de Z\u00fcrich").to_csv(path, encoding="latin-1")
    expected = (rf"^file {re.escape(repr(str(path)))} is not utf-8 text: "
                r".*\(byte\(s\) b'\\xfc'\).*encoding='latin-1'")
    with pytest.raises(DataError, match=expected) as caught:
        load_ohlcv(path)
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)
    with pytest.raises(DataError, match=r"^data\['AAA'\] \(file .*\) is not utf-8 text"):
        load_ohlcv({"AAA": path})
    out = load_ohlcv(path, encoding="latin-1")
    assert out["Exchange"].iloc[0] == "Bourse de Z\u00fcrich"
    pd.testing.assert_frame_equal(out[list(frame.columns)], frame, check_freq=False, check_index_type=False)
    assert load_ohlcv({"AAA": path}, encoding="cp1252")["AAA"]["Exchange"].iloc[-1] == "Bourse de Z\u00fcrich"


def test_encoding_must_be_a_known_encoding(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    frame.to_csv(path)
    with pytest.raises(ValueError, match=r"encoding='utf9' is not a known text encoding"):
        load_ohlcv(path, encoding="utf9")
    with pytest.raises(TypeError, match=r"encoding must be a str"):
        load_ohlcv(path, encoding=None)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(load_ohlcv(path, encoding="utf-8"), load_ohlcv(path))


def test_mapping_of_paths(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.to_csv(tmp_path / "a.csv")
    out = load_ohlcv({"AAA": tmp_path / "a.csv", "BBB": frame})
    assert list(out) == ["AAA", "BBB"]
    assert out["AAA"].index.equals(frame.index)
    with pytest.raises(TypeError, match=r"data\['CCC'\] must be a pandas DataFrame or a path"):
        load_ohlcv({"CCC": 5})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_ohlcv(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type \(\.xlsx\)"
                                        r".*\.csv, \.csv\.gz, \.parquet, \.pq"):
        load_ohlcv(path)


@pytest.mark.parametrize("source", [42, [1, 2], None, b"prices.csv"])
def test_unsupported_source_type(source: object) -> None:
    with pytest.raises(TypeError, match=r"source must be a path.*DataFrame.*mapping"):
        load_ohlcv(source)  # type: ignore[arg-type]

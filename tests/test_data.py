"""Tests of nbbacktest.engine.data: loading, validation and signal checks."""

from __future__ import annotations

import re
import timeit
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.data import (
    OHLC,
    is_universe,
    load_ohlcv,
    validate_data,
    validate_ohlcv,
    validate_signals,
)
from nbbacktest.errors import DataError, NbbacktestWarning, ParamError


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


# ------------------------------------------------------------- canonical form


def test_canonical_frame_is_returned_as_is(frame: pd.DataFrame) -> None:
    assert validate_ohlcv(frame) is frame
    assert validate_ohlcv(frame[list(OHLC)]).columns.tolist() == list(OHLC)


def test_extra_columns_are_kept(frame: pd.DataFrame) -> None:
    extra = frame.assign(Note="x", Signal=1)
    out = validate_ohlcv(extra)
    assert out is extra
    weird = extra.rename(columns={"Close": "close"})
    out = validate_ohlcv(weird)
    assert out.columns.tolist() == ["Open", "High", "Low", "Close", "Volume", "Note", "Signal"]
    assert out["Note"].tolist() == ["x"] * len(frame)
    assert out["Signal"].dtype == np.int64


def test_columns_are_case_insensitive_and_become_float(frame: pd.DataFrame) -> None:
    raw = frame.rename(columns=str.upper).rename(columns={"CLOSE": " close "})
    raw["VOLUME"] = raw["VOLUME"].astype(np.int64)
    raw["OPEN"] = raw["OPEN"].astype(np.float32)
    out = validate_ohlcv(raw)
    assert out.columns.tolist() == ["Open", "High", "Low", "Close", "Volume"]
    assert (out.dtypes == np.float64).all()
    np.testing.assert_allclose(out.to_numpy(), frame.to_numpy(), rtol=1e-6)


def test_nullable_dtypes_become_float64(frame: pd.DataFrame) -> None:
    raw = frame.astype({"Close": "Float64", "Volume": "Int64"})
    out = validate_ohlcv(raw)
    assert (out.dtypes == np.float64).all()


def test_caller_frame_is_not_modified(frame: pd.DataFrame) -> None:
    raw = frame.rename(columns=str.lower).iloc[::-1]
    raw["volume"] = raw["volume"].astype(np.int64)
    before = raw.copy()
    with pytest.warns(NbbacktestWarning):
        out = validate_ohlcv(raw)
    out.iloc[0, 0] = -1.0
    pd.testing.assert_frame_equal(raw, before)


def test_tz_aware_index_is_allowed(frame: pd.DataFrame) -> None:
    aware = frame.tz_localize("America/New_York")
    assert validate_ohlcv(aware) is aware


# ---------------------------------------------------------------------- index


@pytest.mark.parametrize("label", ["date", "Datetime", "TIME", "timestamp"])
def test_date_column_is_detected(frame: pd.DataFrame, label: str) -> None:
    raw = frame.reset_index().rename(columns={"Date": label})
    raw[label] = raw[label].dt.strftime("%Y-%m-%d")
    out = validate_ohlcv(raw)
    assert isinstance(out.index, pd.DatetimeIndex)
    assert label not in out.columns
    assert out.index.equals(frame.index)


def test_explicit_date_column(frame: pd.DataFrame) -> None:
    raw = frame.reset_index().rename(columns={"Date": "When"})
    out = load_ohlcv(raw, date_column="When")
    assert out.index.equals(frame.index)
    with pytest.raises(DataError, match=r"no column 'Nope'.*found columns"):
        load_ohlcv(raw, date_column="Nope")


def test_non_datetime_index_is_an_error(frame: pd.DataFrame) -> None:
    raw = frame.reset_index(drop=True)
    with pytest.raises(DataError, match=r"data must have a DatetimeIndex, got a RangeIndex.*pd\.to_datetime"):
        validate_ohlcv(raw)


def test_unparseable_date_column_is_named(frame: pd.DataFrame) -> None:
    raw = frame.reset_index()
    raw["Date"] = ["not a date"] * len(raw)
    with pytest.raises(DataError, match=r"could not parse column 'Date' as dates"):
        validate_ohlcv(raw)


def test_numeric_date_column_is_refused(frame: pd.DataFrame) -> None:
    raw = frame.reset_index(drop=True).assign(time=np.arange(len(frame)))
    with pytest.raises(DataError, match=r"column 'time' holds numbers, not dates"):
        validate_ohlcv(raw)


def test_unsorted_index_is_sorted_with_a_warning(frame: pd.DataFrame) -> None:
    shuffled = frame.iloc[np.random.default_rng(0).permutation(len(frame))]
    with pytest.warns(NbbacktestWarning, match=r"data's index was not sorted") as record:
        out = validate_ohlcv(shuffled)
    # the warning points at this test, not at nbbacktest's internals
    assert record[0].filename == __file__
    assert out.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(out, frame, check_freq=False)


def test_unsorted_warning_points_at_caller_through_load_ohlcv(frame: pd.DataFrame) -> None:
    with pytest.warns(NbbacktestWarning) as record:
        load_ohlcv(frame.iloc[::-1])
    assert record[0].filename == __file__


def test_duplicated_timestamps_are_an_error(frame: pd.DataFrame) -> None:
    dup = pd.concat([frame, frame.iloc[[2, 2, 5]]])
    with pytest.raises(DataError, match=r"data has 3 duplicated timestamp\(s\).*2024-01-03, 2024-01-06.*duplicated\(keep='last'\)"):
        validate_ohlcv(dup)


def test_nat_in_index_is_an_error(frame: pd.DataFrame) -> None:
    raw = frame.reset_index()
    raw.loc[3, "Date"] = pd.NaT
    with pytest.raises(DataError, match=r"1 missing timestamp\(s\) \(NaT\).*row\(s\) 3"):
        validate_ohlcv(raw)


# --------------------------------------------------------------------- faults


def test_empty_frame_is_an_error(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"data is empty \(0 rows\)"):
        validate_ohlcv(frame.iloc[:0])
    with pytest.raises(DataError, match=r"is empty"):
        validate_ohlcv(pd.DataFrame())


def test_missing_columns_are_listed(frame: pd.DataFrame) -> None:
    with pytest.raises(
        DataError,
        match=r"data is missing column\(s\) 'High', 'Low'; found columns \['Open', 'Close', 'Volume'\].*rename",
    ):
        validate_ohlcv(frame.drop(columns=["High", "Low"]))


def test_two_columns_for_one_field_is_an_error(frame: pd.DataFrame) -> None:
    raw = frame.assign(close=frame["Close"])
    with pytest.raises(DataError, match=r"two columns for Close: 'Close' and 'close'"):
        validate_ohlcv(raw)


def test_nan_prices_say_how_many_and_where(frame: pd.DataFrame) -> None:
    raw = frame.copy()
    raw.iloc[[1, 4], raw.columns.get_loc("Close")] = np.nan
    raw.iloc[7, raw.columns.get_loc("Open")] = np.nan
    with pytest.raises(DataError) as info:
        validate_ohlcv(raw, name="data['AAPL']")
    message = str(info.value)
    assert message.startswith("data['AAPL'] has 3 missing (NaN) OHLC value(s)")
    assert "1 in Open (at 2024-01-08)" in message
    assert "2 in Close (at 2024-01-02, 2024-01-05)" in message
    assert "df.dropna(" in message


def test_infinite_prices_are_invalid(frame: pd.DataFrame) -> None:
    raw = frame.copy()
    raw.iloc[2, raw.columns.get_loc("High")] = np.inf
    with pytest.raises(DataError, match=r"1 infinite OHLC value\(s\): 1 in High \(at 2024-01-03\)"):
        validate_ohlcv(raw)


def test_non_positive_prices_are_invalid(frame: pd.DataFrame) -> None:
    raw = frame.copy()
    raw.iloc[3, raw.columns.get_loc("Low")] = 0.0
    raw.iloc[5, raw.columns.get_loc("Low")] = -2.0
    with pytest.raises(DataError, match=r"2 non-positive price\(s\) \(<= 0\): 2 in Low \(at 2024-01-04, 2024-01-06\)"):
        validate_ohlcv(raw)


def test_high_below_low_is_invalid(frame: pd.DataFrame) -> None:
    raw = frame.copy()
    raw.iloc[6, raw.columns.get_loc("High")] = 90.0
    with pytest.raises(DataError, match=r"1 bar\(s\) with High < Low, first at 2024-01-07 \(High=90, Low=105\).*swapped"):
        validate_ohlcv(raw)


@pytest.mark.parametrize("column", ["Open", "Close"])
def test_open_or_close_outside_the_range_is_invalid(frame: pd.DataFrame, column: str) -> None:
    raw = frame.copy()
    raw.iloc[4, raw.columns.get_loc(column)] = 200.0
    raw.iloc[8, raw.columns.get_loc(column)] = 1.0
    with pytest.raises(DataError, match=rf"2 bar\(s\) with {column} outside \[Low, High\], first at 2024-01-05.*\.max\(axis=1\)"):
        validate_ohlcv(raw)


def test_non_numeric_column_is_an_error(frame: pd.DataFrame) -> None:
    raw = frame.astype({"Close": str})
    with pytest.raises(DataError, match=r"column 'Close' is not numeric \(dtype .*e\.g\. '100\.0'\).*pd\.to_numeric"):
        validate_ohlcv(raw)
    with pytest.raises(DataError, match=r"column 'Volume' is not numeric"):
        validate_ohlcv(frame.assign(Volume="lots"))


def test_validate_ohlcv_rejects_non_frames() -> None:
    with pytest.raises(TypeError, match=r"data must be a pandas DataFrame, got list"):
        validate_ohlcv([1, 2, 3])  # type: ignore[arg-type]


# ------------------------------------------------------------------- universe


def test_universe_is_validated_symbol_by_symbol(frame: pd.DataFrame) -> None:
    universe = {"BBB": frame.rename(columns=str.lower), "AAA": frame}
    assert is_universe(universe) and not is_universe(frame) and not is_universe([frame])
    out = validate_data(universe)
    assert type(out) is dict and list(out) == ["BBB", "AAA"]
    assert out["AAA"] is frame
    assert out["BBB"].columns.tolist() == list(frame.columns)
    assert validate_data(frame) is frame


def test_universe_errors_name_the_symbol(frame: pd.DataFrame) -> None:
    bad = frame.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match=r"^data\['BBB'\] has 1 missing \(NaN\)"):
        validate_data({"AAA": frame, "BBB": bad})
    with pytest.raises(DataError, match=r"^data\['AAA'\] is missing column"):
        load_ohlcv({"AAA": frame.drop(columns="Low")})


def test_empty_universe_is_an_error() -> None:
    with pytest.raises(DataError, match=r"data is an empty mapping"):
        validate_data({})
    with pytest.raises(DataError, match=r"empty mapping"):
        load_ohlcv({})


def test_universe_keys_must_be_str(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"1 non-str key\(s\) \(1\).*must be str"):
        validate_data({"AAA": frame, 1: frame})  # type: ignore[dict-item]


def test_universe_values_must_be_frames(frame: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match=r"data\['AAA'\] must be a pandas DataFrame, got int"):
        validate_data({"AAA": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"data must be a pandas DataFrame or a mapping"):
        validate_data([frame])  # type: ignore[arg-type]


def test_one_symbol_given_as_a_str_selects_that_symbol(frame: pd.DataFrame) -> None:
    # nbb.sweep's check of symbols= against a universe (parallel/sweep.py, universe_symbols)
    import nbbacktest as nbb
    from nbbacktest.engine.examples import SmaCross
    from nbbacktest.errors import SweepError

    universe = {"AAA": frame, "BBB": frame * 1.5}
    sweep = nbb.sweep(SmaCross, universe, {"fast": [2, 3], "slow": [5]}, symbols="BBB", progress=False)
    assert sweep.results["symbol"].tolist() == ["BBB", "BBB"]
    runs = nbb.run_many([SmaCross(2, 5)], universe, symbols="AAA", progress=False)
    assert runs.results["symbol"].tolist() == ["AAA"]
    with pytest.raises(SweepError, match=r"symbols \['ZZZ'\] are not in the data; it has AAA, BBB"):
        nbb.sweep(SmaCross, universe, {"fast": [2]}, symbols="ZZZ", progress=False)
    with pytest.raises(SweepError, match=r"symbols must be a list of symbols .* got int 5"):
        nbb.sweep(SmaCross, universe, {"fast": [2]}, symbols=5, progress=False)  # type: ignore[arg-type]


# -------------------------------------------------------------------- loading


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
    expected = rf"^file {re.escape(repr(str(path)))} is not utf-8 text: .*\(byte\(s\) b'\\xfc'\).*encoding='latin-1'"
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
    with pytest.raises(DataError, match=r"unsupported file type \(\.xlsx\).*\.csv, \.csv\.gz, \.parquet, \.pq"):
        load_ohlcv(path)


@pytest.mark.parametrize("source", [42, [1, 2], None, b"prices.csv"])
def test_unsupported_source_type(source: object) -> None:
    with pytest.raises(TypeError, match=r"source must be a path.*DataFrame.*mapping"):
        load_ohlcv(source)  # type: ignore[arg-type]


# -------------------------------------------------------------------- signals


def test_signals_series_with_the_same_index(frame: pd.DataFrame) -> None:
    signals = (frame["Close"] > 104).astype(float)
    out = validate_signals(signals, frame)
    assert out.dtype == np.float64 and out.flags.writeable
    np.testing.assert_array_equal(out, signals.to_numpy())
    # an equal index that is another object is accepted too
    other = pd.Series(signals.to_numpy(), index=frame.index.copy())
    np.testing.assert_array_equal(validate_signals(other, frame), out)


def test_signals_of_bools_ints_and_one_column_frames(frame: pd.DataFrame) -> None:
    n = len(frame)
    bools = frame["Close"] > 104
    np.testing.assert_array_equal(validate_signals(bools, frame), bools.to_numpy(dtype=float))
    ints = np.tile([1, 0, -1], n)[:n]
    np.testing.assert_array_equal(validate_signals(ints, frame), ints.astype(float))
    np.testing.assert_array_equal(validate_signals(list(ints), frame), ints.astype(float))
    column = bools.to_frame("x")
    np.testing.assert_array_equal(validate_signals(column, frame), bools.to_numpy(dtype=float))
    with pytest.raises(DataError, match=r"DataFrame with 2 columns"):
        validate_signals(column.assign(y=1), frame)


def test_signals_with_another_index(frame: pd.DataFrame) -> None:
    shifted = pd.Series(1.0, index=frame.index.shift(1))
    with pytest.raises(DataError, match=r"index differs from the data's index, first at position 0.*reindex"):
        validate_signals(shifted, frame)
    changed = pd.Series(1.0, index=frame.index.delete(5).append(pd.DatetimeIndex(["2030-01-01"])))
    with pytest.raises(DataError, match=r"first at position 5: Timestamp\('2024-01-07"):
        validate_signals(changed, frame)
    short = pd.Series(1.0, index=frame.index[:-2])
    with pytest.raises(DataError, match=r"signals has 8 rows but the data has 10 bars \(length mismatch\)"):
        validate_signals(short, frame)


def test_signals_of_the_wrong_length(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"signals has 3 values but the data has 10 bars \(length mismatch\)"):
        validate_signals(np.ones(3), frame)
    with pytest.raises(DataError, match=r"must be 1-D.*shape \(10, 2\)"):
        validate_signals(np.ones((10, 2)), frame)


def test_nan_signals_mean_flat(frame: pd.DataFrame) -> None:
    values = np.ones(len(frame))
    values[:3] = np.nan
    out = validate_signals(values, frame)
    assert np.isnan(values[:3]).all()  # the caller's array is untouched
    np.testing.assert_array_equal(out, np.r_[0.0, 0.0, 0.0, np.ones(7)])
    series = pd.Series([True, None] * 5, index=frame.index)
    np.testing.assert_array_equal(validate_signals(series, frame), [1.0, 0.0] * 5)


def test_infinite_signals_are_an_error(frame: pd.DataFrame) -> None:
    values = np.zeros(len(frame))
    values[4] = -np.inf
    with pytest.raises(DataError, match=r"1 infinite value\(s\), first -inf at 2024-01-05 \(position 4\)"):
        validate_signals(values, frame)


def test_signals_beyond_the_leverage_limit(frame: pd.DataFrame) -> None:
    values = np.zeros(len(frame))
    values[2], values[6] = 1.5, -2.5
    with pytest.raises(DataError, match=r"2 value\(s\) beyond 1 .*first 1\.5 at 2024-01-03.*pass leverage=2\.5 to allow it"):
        validate_signals(values, frame)
    with pytest.raises(DataError, match=r"beyond the leverage limit of 2, first -2\.5 at 2024-01-07.*leverage=2\.5"):
        validate_signals(values, frame, leverage=2)
    np.testing.assert_array_equal(validate_signals(values, frame, leverage=2.5), values)
    # leverage below 1 does not shrink the unlevered limit
    np.testing.assert_array_equal(validate_signals(np.ones(10), frame, leverage=0.5), np.ones(10))


def test_signals_a_rounding_error_above_the_limit_are_clipped(frame: pd.DataFrame) -> None:
    values = np.full(len(frame), 0.1 * 3 / 0.3 + 1e-15)
    np.testing.assert_array_equal(validate_signals(values, frame), np.ones(10))


def test_bad_leverage(frame: pd.DataFrame) -> None:
    with pytest.raises(ParamError, match=r"leverage must be a finite number > 0, got -1"):
        validate_signals(np.zeros(10), frame, leverage=-1)
    with pytest.raises(ParamError, match=r"leverage must be a number"):
        validate_signals(np.zeros(10), frame, leverage="2")  # type: ignore[arg-type]


def test_non_numeric_signals(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"signals must hold numbers or booleans.*e\.g\. 'buy'"):
        validate_signals(pd.Series("buy", index=frame.index), frame)
    with pytest.raises(DataError, match=r"must hold numbers or booleans"):
        validate_signals(["buy"] * len(frame), frame)
    with pytest.raises(TypeError, match=r"signals must be a pandas Series.*got float"):
        validate_signals(1.0, frame)  # type: ignore[arg-type]


# ------------------------------------------------------------------ speed


def _best_us(call: object, number: int = 2000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def test_validation_is_cheap_on_canonical_data() -> None:
    # budgets are generous multiples of the measured ~17 us and ~6 us, to
    # catch an accidental copy or per-column pandas access, not CPU noise
    frame = make_frame(2500, start="2014-01-02", freq="B")
    signals = (frame["Close"] > frame["Close"].shift()).astype(float)
    assert _best_us(lambda: validate_ohlcv(frame)) < 120
    assert _best_us(lambda: validate_signals(signals, frame)) < 60

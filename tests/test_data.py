"""Tests of nbbacktest.engine.data: validation of one frame and of a universe."""

from __future__ import annotations

import timeit

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.data import OHLC, is_universe, validate_data, validate_ohlcv
from nbbacktest.engine.loading import load_ohlcv
from nbbacktest.errors import DataError, NbbacktestWarning


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
    with pytest.raises(DataError, match=r"data has 3 duplicated timestamp\(s\).*2024-01-03, 2024-01-06"
                                        r".*duplicated\(keep='last'\)"):
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
        match=r"data is missing column\(s\) 'High', 'Low'; found columns "
              r"\['Open', 'Close', 'Volume'\].*rename",
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
    with pytest.raises(DataError, match=r"2 non-positive price\(s\) \(<= 0\): "
                                        r"2 in Low \(at 2024-01-04, 2024-01-06\)"):
        validate_ohlcv(raw)


def test_high_below_low_is_invalid(frame: pd.DataFrame) -> None:
    raw = frame.copy()
    raw.iloc[6, raw.columns.get_loc("High")] = 90.0
    with pytest.raises(DataError, match=r"1 bar\(s\) with High < Low, first at 2024-01-07 "
                                        r"\(High=90, Low=105\).*swapped"):
        validate_ohlcv(raw)


@pytest.mark.parametrize("column", ["Open", "Close"])
def test_open_or_close_outside_the_range_is_invalid(frame: pd.DataFrame, column: str) -> None:
    raw = frame.copy()
    raw.iloc[4, raw.columns.get_loc(column)] = 200.0
    raw.iloc[8, raw.columns.get_loc(column)] = 1.0
    with pytest.raises(DataError, match=rf"2 bar\(s\) with {column} outside \[Low, High\], "
                                        r"first at 2024-01-05.*\.max\(axis=1\)"):
        validate_ohlcv(raw)


def test_non_numeric_column_is_an_error(frame: pd.DataFrame) -> None:
    raw = frame.astype({"Close": str})
    with pytest.raises(DataError, match=r"column 'Close' is not numeric \(dtype .*e\.g\. '100\.0'\)"
                                        r".*pd\.to_numeric"):
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


# ------------------------------------------------------------------ speed


def _best_us(call: object, number: int = 2000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def test_validation_is_cheap_on_canonical_data() -> None:
    # a generous multiple of the measured ~17 us, to catch an accidental copy or
    # per-column pandas access, not CPU noise (signals: test_signals.py)
    frame = make_frame(2500, start="2014-01-02", freq="B")
    assert _best_us(lambda: validate_ohlcv(frame)) < 120

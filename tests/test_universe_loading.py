"""Tests of nbbacktest.engine.universe_loading (load_universe) and the "equities" sample.

What load_universe does whatever the source: mappings and universes, ``symbols=``,
the checks of every symbol's bars (frequencies, NaN, duplicated dates) and the
dispatch of sources. The readers of each shape (long tables, wide frames, folders,
workbooks) are tested in test_universe_formats.py, with the helpers defined here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.samples import SAMPLE_NAMES, load_sample, make_sample
from nbbacktest.engine.universe import Universe
from nbbacktest.engine.universe_loading import load_universe
from nbbacktest.errors import DataError

FIELDS = ["Open", "High", "Low", "Close", "Volume"]


def bars(n: int, start: str, seed: int, freq: str = "B") -> pd.DataFrame:
    """OHLCV bars of one symbol, High and Low around Open and Close."""
    rng = np.random.default_rng(seed)
    close = np.round(50 * np.exp(np.cumsum(0.01 * rng.standard_normal(n))), 4)
    open_ = np.round(close * (1 + 0.002 * rng.standard_normal(n)), 4)
    index = pd.date_range(start, periods=n, freq=freq, name="Date")
    return pd.DataFrame({"Open": open_, "High": np.maximum(open_, close) + 0.5,
                         "Low": np.minimum(open_, close) - 0.5, "Close": close,
                         "Volume": np.round(1e5 * (1 + rng.random(n)))}, index=index)


def three_symbols() -> dict[str, pd.DataFrame]:
    """Three symbols, two of them on shorter spans: NaN where one has no bar."""
    return {"AAA": bars(30, "2024-01-01", 1), "BBB": bars(20, "2024-01-10", 2),
            "CCC": bars(25, "2024-01-01", 3)}


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    return three_symbols()


@pytest.fixture
def expected(frames: dict[str, pd.DataFrame]) -> Universe:
    return Universe.from_frames(frames)


def long_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """date, symbol, open, ... in lower case, rows in date order (symbols interleaved)."""
    table = pd.concat([f.assign(symbol=s) for s, f in frames.items()]).reset_index()
    table = table.rename(columns=str.lower).sort_values("date", kind="stable")
    return table[["date", "symbol", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def wide(frames: dict[str, pd.DataFrame], field_first: bool = True) -> pd.DataFrame:
    """What yfinance.download returns: (field, symbol) columns, each padded with NaN rows."""
    table = pd.concat({s: f.assign(**{"Adj Close": f["Close"] * 0.9}) for s, f in frames.items()}, axis=1)
    table.columns.names = ["Ticker", "Price"]
    return table.swaplevel(axis=1).sort_index(axis=1) if field_first else table


def assert_same(universe: Universe, expected: Universe) -> None:
    assert isinstance(universe, Universe)
    assert universe.symbols.tolist() == expected.symbols.tolist()
    assert universe.index.equals(expected.index)
    assert universe.index.name == "Date"
    np.testing.assert_array_equal(universe.block, expected.block)  # NaN equals NaN here


def write_workbook(path: Path, sheets: dict[str, pd.DataFrame]) -> None:
    """Write sheets with openpyxl if installed, else with another writer pandas has."""
    pytest.importorskip("python_calamine")
    engine = next((e for e in ("openpyxl", "xlsxwriter") if importlib.util.find_spec(e)), None)
    if engine is None:
        pytest.importorskip("openpyxl")
    with pd.ExcelWriter(path, engine=engine) as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name)


# ------------------------------------------------------------------ mappings and universes


def test_mapping_and_universe(frames: dict[str, pd.DataFrame], expected: Universe) -> None:
    assert_same(load_universe(frames), expected)
    assert load_universe(expected) is expected
    assert load_universe(expected, symbols=["CCC"]).symbols.tolist() == ["CCC"]
    assert nbb.load_universe is load_universe and nbb.Universe is Universe


# ------------------------------------------------------------------ symbols=


@pytest.mark.parametrize("kind", ["long", "wide", "mapping", "universe"])
def test_unknown_symbol_suggests_one(frames: dict[str, pd.DataFrame], kind: str) -> None:
    source = {"long": long_table(frames), "wide": wide(frames), "mapping": frames,
              "universe": Universe.from_frames(frames)}[kind]
    with pytest.raises(DataError, match=r"symbol 'BBC' is not in data\. Did you mean: BBB\?"
                                        r" \(3 symbols: AAA, BBB, CCC\)"):
        load_universe(source, symbols=["AAA", "BBC"])
    with pytest.raises(DataError, match=r"symbol 'ZZZ' is not in data \(3 symbols"):
        load_universe(source, symbols="ZZZ")


# ------------------------------------------------------------------ faults


def test_duplicated_dates_of_one_symbol(frames: dict[str, pd.DataFrame]) -> None:
    frames["BBB"] = pd.concat([frames["BBB"], frames["BBB"].iloc[[3]]])
    with pytest.raises(DataError, match=r"data\['BBB'\] has 1 duplicated timestamp\(s\).*2024-01-15"):
        load_universe(frames)


def test_a_symbol_without_prices(frames: dict[str, pd.DataFrame]) -> None:
    table = long_table(frames)
    table.loc[table["symbol"] == "BBB", ["open", "high", "low", "close"]] = np.nan
    with pytest.raises(DataError, match=r"symbol 'BBB' has no prices in data: all 20 of its rows"
                                        r" \(2024-01-10 to 2024-02-06\) have NaN"):
        load_universe(table)
    # in a wide frame an all-NaN symbol is a failed download: no rows at all
    padded = wide(frames)
    padded.loc[:, pd.IndexSlice[:, "CCC"]] = np.nan
    with pytest.raises(DataError, match=r"symbol 'CCC' has no rows in data: every one of its prices is NaN"):
        load_universe(padded)


def test_mixed_frequencies(frames: dict[str, pd.DataFrame]) -> None:
    frames["BBB"] = bars(60, "2024-01-03 10:00", 4, freq="h")
    with pytest.raises(DataError, match=r"data mixes bar frequencies: symbol 'AAA' has a bar every 1 day"
                                        r" \(its median spacing\) but symbol 'BBB' one every 1 hour, from"
                                        r" 2024-01-03 10:00:00\. .*resample 'BBB', e\.g\. frame\.resample\('D'\)"):
        load_universe(frames)
    frames["BBB"] = bars(12, "2024-01-05", 4, freq="W-FRI")
    with pytest.raises(DataError, match=r"'AAA' has a bar every 1 day .* 'BBB' one every 7 days"):
        load_universe(long_table(frames))
    # gaps are not another frequency: every other day, or a missing week, still is daily
    frames["BBB"] = bars(20, "2024-01-10", 4).drop(pd.bdate_range("2024-01-15", periods=5))
    load_universe(frames)


def test_nan_and_non_positive_prices(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    table = long_table(frames)
    table.loc[(table["symbol"] == "BBB") & (table["date"] == "2024-01-15"), "close"] = np.nan
    path = tmp_path / "prices.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"file '.*prices\.csv'\['BBB'\] has 1 missing \(NaN\) OHLC"
                                        r" value\(s\): 1 in Close \(at 2024-01-15\)"):
        load_universe(path)
    padded = wide(frames)
    padded.loc["2024-01-04", ("Low", "AAA")] = -1.0
    with pytest.raises(DataError, match=r"data\['AAA'\] has 1 non-positive price\(s\) \(<= 0\): 1 in Low"
                                        r" \(at 2024-01-04\)"):
        load_universe(padded)
    # a row of a wide frame with some prices is a bar: its NaN is a fault, not padding
    padded = wide(frames)
    padded.loc["2024-01-05", ("Open", "CCC")] = np.nan
    with pytest.raises(DataError, match=r"data\['CCC'\] has 1 missing \(NaN\).*2024-01-05"):
        load_universe(padded)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"source must be a path .* got int"):
        load_universe(3)  # type: ignore[arg-type]
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_universe(missing)
    (tmp_path / "prices.json").write_text("{}")
    with pytest.raises(DataError, match=r"unsupported file type \(\.json\)"):
        load_universe(tmp_path / "prices.json")
    with pytest.raises(DataError, match=r"folder '.*' has no \.csv, \.csv\.gz, \.parquet, \.pq file"):
        load_universe(tmp_path)
    with pytest.raises(DataError, match=r"symbols is empty"):
        load_universe({"AAA": bars(5, "2024-01-01", 1)}, symbols=[])


# ------------------------------------------------------------------ the "equities" sample


@pytest.fixture(scope="module")
def equities() -> Universe:
    return load_sample("equities")  # type: ignore[return-value]


def monthly_ic(close: pd.DataFrame, score: pd.DataFrame, horizon: int = 21) -> pd.Series:
    """Rank IC of a score against the next ``horizon`` bars' return, at each month's last bar."""
    future = close.shift(-horizon) / close - 1
    ends = close.groupby(close.index.to_period("M")).tail(1).index
    ics = {}
    for when in ends:
        both = pd.DataFrame({"score": score.loc[when], "future": future.loc[when]}).dropna()
        if len(both) >= 10:  # listed symbols with a score and a next month
            ics[when] = both["score"].rank().corr(both["future"].rank())
    return pd.Series(ics)


def test_equities_sample_shape(equities: Universe) -> None:
    assert "equities" in SAMPLE_NAMES
    assert isinstance(equities, Universe)
    bars_, symbols = equities.shape
    assert symbols >= 50 and 2_500 <= bars_ <= 2_540
    assert (equities.index.day_of_week < 5).all()
    listing = equities.listing()
    assert (listing["first"] > equities.index[0]).sum() >= 5  # listed after the start
    assert (listing["last"] < equities.index[-1]).sum() >= 5  # delisted before the end
    assert listing["bars"].min() >= 252  # every symbol at least a year
    again = load_sample("equities")
    assert again is not equities and again.block is equities.block  # read-only, shared
    # what is shipped is what the generator makes
    generated = make_sample("equities")
    assert isinstance(generated, Universe) and generated.symbols.equals(equities.symbols)
    np.testing.assert_allclose(generated.block, equities.block, rtol=0, atol=1e-9)


def test_equities_sample_has_the_planted_momentum(equities: Universe) -> None:
    close = equities.close
    momentum = monthly_ic(close, close / close.shift(126) - 1)
    noise = pd.DataFrame(np.random.default_rng(7).standard_normal(close.shape),
                         index=close.index, columns=close.columns).where(close.notna())
    random = monthly_ic(close, noise)
    assert len(momentum) >= 100
    assert momentum.mean() > 0.02
    assert abs(random.mean()) < 0.03
    assert momentum.mean() > random.mean() + 0.02
    assert momentum.mean() / momentum.std() * np.sqrt(len(momentum)) > 2.5  # a t-statistic

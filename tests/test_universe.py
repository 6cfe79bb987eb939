"""Universe (nbbacktest.engine.universe): aligning frames on one calendar, selecting symbols,
the read-only block and its views, listings, the mapping interface, pickling and as_universe."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.universe import FIELDS, Universe, as_universe
from nbbacktest.errors import DataError

INDEX = pd.date_range("2024-01-01", periods=6, freq="D")


def ohlc(index, start: float, volume: bool = False) -> pd.DataFrame:
    close = start + np.arange(len(index), dtype=float)
    frame = pd.DataFrame({"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close},
                         index=index)
    if volume:
        frame["Volume"] = 1_000.0 + np.arange(len(index))
    return frame


#: A with volume on days 0-3, B without on days 2-5, C without day 1: the union is all six days.
FRAMES = {
    "A": ohlc(INDEX[:4], 10.0, volume=True),
    "B": ohlc(INDEX[2:], 20.0),
    "C": ohlc(INDEX.delete(1), 30.0),
}


@pytest.fixture(scope="module")
def universe() -> Universe:
    return Universe.from_frames(FRAMES)


@pytest.fixture(scope="module")
def sample() -> Universe:
    return Universe.from_frames(nbb.load_sample("universe"))


# ----------------------------------------------------------------- 1. building


def test_from_frames_aligns_on_the_union_of_dates_with_nan_where_a_symbol_has_no_bar(universe):
    assert universe.index.equals(INDEX)
    assert universe.symbols.tolist() == ["A", "B", "C"] and universe.shape == (6, 3)
    assert universe.block.shape == (len(FIELDS), 6, 3) and universe.block.dtype == np.float64
    nan = np.nan
    np.testing.assert_array_equal(universe.close.to_numpy(), [
        [10, nan, 30], [11, nan, nan], [12, 20, 31], [13, 21, 32], [nan, 22, 33], [nan, 23, 34]])
    np.testing.assert_array_equal(universe.open["B"].dropna(), FRAMES["B"]["Open"])
    np.testing.assert_array_equal(universe.high["C"].dropna(), FRAMES["C"]["High"])
    np.testing.assert_array_equal(universe.low["A"].dropna(), FRAMES["A"]["Low"])
    assert universe.listed.tolist() == (~np.isnan(universe.close.to_numpy())).tolist()
    assert universe.nbytes == 5 * 6 * 3 * 8


def test_volume_is_kept_where_given_and_nan_where_absent(universe):
    volume = universe.volume
    np.testing.assert_array_equal(volume["A"].iloc[:4], FRAMES["A"]["Volume"])
    assert volume["A"].iloc[4:].isna().all()  # no bars there
    assert volume["B"].isna().all() and volume["C"].isna().all()
    assert universe["A"].columns.tolist() == ["Open", "High", "Low", "Close", "Volume"]
    assert universe["B"].columns.tolist() == ["Open", "High", "Low", "Close"]  # none given: none shown


def test_frames_in_mixed_time_zones_are_an_error():
    aware = {"A": FRAMES["A"].tz_localize("UTC"), "B": FRAMES["B"].tz_localize("America/New_York")}
    with pytest.raises(DataError, match=r"data mixes time zones \(America/New_York, UTC\); convert every"
                                        r" symbol to one, e.g. frame.tz_convert\('UTC'\)"):
        Universe.from_frames(aware)
    with pytest.raises(DataError, match=r"prices mixes time zones \(None, UTC\)"):
        Universe.from_frames({"A": FRAMES["A"], "B": aware["A"]}, name="prices")
    one_zone = Universe.from_frames({"A": aware["A"], "B": FRAMES["B"].tz_localize("UTC")})
    assert str(one_zone.index.tz) == "UTC"


def test_from_frames_refuses_one_instrument_and_passes_a_universe_through(universe):
    with pytest.raises(DataError, match=r"data is one instrument; a universe needs a mapping"):
        Universe.from_frames(FRAMES["A"])
    assert Universe.from_frames(universe) is universe


def test_a_block_of_the_wrong_shape_is_an_error():
    with pytest.raises(DataError, match=r"must have shape \(5, bars, symbols\), got \(4, 6, 3\)"):
        Universe(np.zeros((4, 6, 3)), INDEX, ["A", "B", "C"])
    with pytest.raises(DataError, match=r"block of shape \(5, 6, 3\) does not match 6 bar times and 2"
                                        r" symbols"):
        Universe(np.zeros((5, 6, 3)), INDEX, ["A", "B"])


# ----------------------------------------------------------------- 2. selecting


def test_select_keeps_the_order_asked_for(universe):
    picked = universe.select(["C", "A"])
    assert picked.symbols.tolist() == ["C", "A"] and list(picked) == ["C", "A"]
    assert picked.index.equals(universe.index)  # bar times kept whole, even where both have none
    np.testing.assert_array_equal(picked.close.to_numpy(), universe.close[["C", "A"]].to_numpy())
    assert universe.select("B").symbols.tolist() == ["B"]
    with pytest.raises(DataError, match=r"symbols is empty"):
        universe.select([])


def test_select_rejects_an_unknown_symbol_with_a_hint(sample):
    with pytest.raises(DataError, match=r"^symbol 'AAB' is not in the universe\. Did you mean: AAA\? \(10"
                                        r" symbols: AAA, BBB, CCC, DDD, EEE, FFF, GGG, HHH, \.\.\.\)$"):
        sample.select(["BBB", "AAB"])
    with pytest.raises(DataError, match=r"^symbol 'ZZZ' is not in the universe\. \(10 symbols: AAA,"):
        sample.select(["ZZZ"])
    with pytest.raises(DataError, match=r"^symbol 'D' is not in the universe\. \(3 symbols: A, B, C\)$"):
        Universe.from_frames(FRAMES).position("D")


# ----------------------------------------------------------------- 3. the block and its views


def test_the_block_is_read_only_and_the_fields_are_views_of_it(universe):
    assert not universe.block.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        universe.block[0, 0, 0] = 1.0
    for name in FIELDS:
        frame = universe.field(name)
        assert np.shares_memory(frame.to_numpy(), universe.block), name
        assert frame is universe.field(name)  # built once
    assert not universe.listed.flags.writeable
    with pytest.raises(AttributeError, match=r"a universe has no field 'closes'"):
        universe.field("closes")


def test_a_universe_keeps_the_block_it_is_given():
    block = np.random.default_rng(1).random((5, 6, 3))
    universe = Universe(block, INDEX, ["A", "B", "C"])
    # no copy, read-only for the universe, and the caller's own array is left as it was
    assert np.shares_memory(universe.block, block) and not universe.block.flags.writeable
    assert block.flags.writeable
    assert np.shares_memory(universe.close.to_numpy(), block)


def test_returns_are_close_to_close_with_nan_across_gaps(universe):
    returns = universe.returns
    assert returns.iloc[0].isna().all()
    assert returns["A"].iloc[1] == pytest.approx(11 / 10 - 1)
    assert np.isnan(returns["C"].iloc[1]) and np.isnan(returns["C"].iloc[2])  # no bar 1 either side
    assert np.isnan(returns["A"].iloc[4]) and np.isnan(returns["B"].iloc[2])


# ----------------------------------------------------------------- 4. listings


def test_listing_gives_each_symbols_first_and_last_bar_and_count(universe):
    listing = universe.listing()
    assert listing.index.tolist() == ["A", "B", "C"]
    assert listing["first"].tolist() == [INDEX[0], INDEX[2], INDEX[0]]
    assert listing["last"].tolist() == [INDEX[3], INDEX[5], INDEX[5]]
    assert listing["bars"].tolist() == [4, 4, 5]


# ----------------------------------------------------------------- 5. the mapping interface


def test_a_universe_is_a_mapping_of_each_symbols_own_bars(universe):
    assert isinstance(universe, Mapping)
    assert list(universe) == ["A", "B", "C"] and len(universe) == 3
    assert "B" in universe and "D" not in universe and 3 not in universe
    for symbol, frame in FRAMES.items():
        own = universe[symbol]
        assert own.index.equals(frame.index)  # only its bars: no NaN rows from the union
        pd.testing.assert_frame_equal(own, frame, check_freq=False)
        assert universe[symbol] is own  # built once
    assert dict(universe.items()).keys() == FRAMES.keys()
    with pytest.raises(DataError, match=r"symbol 'D' is not in the universe\."):
        universe["D"]


def test_repr_names_the_size_and_span(universe):
    assert repr(universe) == "<Universe 3 symbols x 6 bars, 2024-01-01 to 2024-01-06>"


# ----------------------------------------------------------------- 6. pickling


def test_a_universe_pickles_to_an_equal_one(universe):
    universe.close  # noqa: B018 - a cached view, not pickled
    back = pickle.loads(pickle.dumps(universe))
    assert type(back) is Universe
    np.testing.assert_array_equal(back.block, universe.block)  # NaN where NaN
    assert back.index.equals(universe.index) and back.symbols.equals(universe.symbols)
    pd.testing.assert_frame_equal(back.close, universe.close)
    for symbol in universe:
        pd.testing.assert_frame_equal(back[symbol], universe[symbol])


def test_a_selected_or_unpickled_universe_is_read_only_too(universe):
    assert not universe.select(["C", "A"]).block.flags.writeable
    assert not pickle.loads(pickle.dumps(universe)).block.flags.writeable


# ----------------------------------------------------------------- 7. as_universe


def test_as_universe_takes_a_mapping_or_a_universe(universe):
    built = as_universe(FRAMES)
    assert isinstance(built, Universe)
    np.testing.assert_array_equal(built.block, universe.block)
    assert as_universe(universe) is universe


@pytest.mark.parametrize("data", [FRAMES["A"], [1, 2], "AAA"], ids=["DataFrame", "list", "str"])
def test_as_universe_refuses_other_types_naming_the_argument(data):
    kind = type(data).__name__
    with pytest.raises(TypeError, match=rf"^data must be a universe: nbb.load_universe\(\.\.\.\) or a mapping"
                                        rf" \{{symbol: DataFrame\}}, got {kind}$"):
        as_universe(data)
    with pytest.raises(TypeError, match=r"^prices must be a universe"):
        as_universe(data, name="prices")


def test_get_answers_like_a_mapping(sample):
    assert sample.get("ZZZ") is None and sample.get("ZZZ", 0) == 0
    assert sample.get("AAA").equals(sample["AAA"])

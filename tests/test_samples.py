"""Tests of the shipped synthetic samples (nbbacktest.engine.samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbbacktest.engine.samples as samples_module
from nbbacktest.engine.data import OHLC, validate_ohlcv
from nbbacktest.engine.samples import SAMPLE_NAMES, Sample, load_sample, make_sample
from nbbacktest.engine.universe import Universe


def as_frames(sample: Sample, name: str) -> dict[str, pd.DataFrame]:
    """Every frame of a sample, keyed by a label for messages."""
    if isinstance(sample, Universe):
        # each symbol's own bars: its listed span only, no NaN rows
        return {symbol: sample[symbol] for symbol in sample}
    return sample if isinstance(sample, dict) else {name: sample}


def frames(name: str) -> dict[str, pd.DataFrame]:
    """Every frame of a shipped sample, keyed by a label for messages."""
    return as_frames(load_sample(name), name)


ALL_FRAMES = [(name, label) for name in SAMPLE_NAMES for label in frames(name)]


@pytest.fixture(params=ALL_FRAMES, ids=[label for _, label in ALL_FRAMES])
def sample_frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    name, label = request.param
    return frames(name)[label]


def test_names() -> None:
    assert SAMPLE_NAMES == ("daily", "hourly", "universe", "equities")


def test_daily_shape() -> None:
    data = load_sample()
    assert isinstance(data, pd.DataFrame)
    assert data.shape == (2500, 5)
    assert data.index[0] == pd.Timestamp("2014-01-02")
    assert (data.index.day_of_week < 5).all()  # business days


def test_hourly_shape() -> None:
    data = load_sample("hourly")
    assert isinstance(data, pd.DataFrame)
    assert len(data) == 20_000
    steps = data.index.to_series().diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(hours=1)]  # 24/7, no gaps in time
    assert (data.index.day_of_week >= 5).any()


def test_universe_shape() -> None:
    universe = load_sample("universe")
    assert isinstance(universe, dict) and len(universe) >= 10
    assert all(len(s) == 3 and len(set(s)) == 1 for s in universe)  # "AAA", "BBB", ...
    index = universe["AAA"].index
    for frame in universe.values():
        assert frame.shape == (2500, 5)
        assert frame.index.equals(index)


def test_universe_moves_together() -> None:
    universe = load_sample("universe")
    returns = pd.DataFrame({s: np.log(f["Close"]).diff() for s, f in universe.items()})
    corr = returns.corr().to_numpy()
    pairs = corr[np.triu_indices_from(corr, k=1)]
    assert 0.2 < pairs.mean() < 0.8  # a common market factor, not clones


def test_invariants(sample_frame: pd.DataFrame) -> None:
    frame = sample_frame
    assert validate_ohlcv(frame) is frame
    assert frame.columns.tolist() == [*OHLC, "Volume"]
    assert (frame.dtypes == np.float64).all()
    assert (frame["High"] >= frame[["Open", "Close"]].max(axis=1)).all()
    assert (frame["Low"] <= frame[["Open", "Close"]].min(axis=1)).all()
    assert (frame[list(OHLC)] > 0).all().all()
    assert (frame["Volume"] > 0).all()
    prices = frame[list(OHLC)].to_numpy()
    np.testing.assert_array_equal(prices, np.round(prices, 4))


def test_loads_are_equal_and_independent() -> None:
    first, second = load_sample("daily"), load_sample("daily")
    pd.testing.assert_frame_equal(first, second)
    first.iloc[0, 0] = -1.0
    first.index.name = "changed"
    third = load_sample("daily")
    pd.testing.assert_frame_equal(third, second)
    universe = load_sample("universe")
    universe["AAA"].iloc[0, 0] = -1.0
    del universe["BBB"]
    again = load_sample("universe")
    assert again["AAA"].iloc[0, 0] > 0 and "BBB" in again


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_shipped_file_equals_the_generator(name: str) -> None:
    shipped, generated = load_sample(name), make_sample(name)
    assert type(shipped) is type(generated)
    left, right = as_frames(shipped, name), as_frames(generated, name)
    assert list(left) == list(right)
    for label in left:
        pd.testing.assert_frame_equal(left[label], right[label], rtol=0, atol=1e-9)


def test_generator_is_deterministic() -> None:
    pd.testing.assert_frame_equal(make_sample("daily"), make_sample("daily"))


def test_files_are_small() -> None:
    directory = Path(samples_module.__file__).parent / "sample_data"
    sizes = {p.name: p.stat().st_size for p in directory.glob("*.csv.gz")}
    assert set(sizes) == {f"{name}.csv.gz" for name in SAMPLE_NAMES}
    # "equities" (52 symbols x 10 years, ~2.7 MB) is most of the ~3.8 MB shipped: headroom, no more
    assert max(sizes.values()) < 3_000_000
    assert sum(sizes.values()) < 4_500_000


# ------------------------------------------------------------------ realism


def test_volatility_clusters(sample_frame: pd.DataFrame) -> None:
    returns = np.log(sample_frame["Close"]).diff().dropna()
    assert (returns**2).autocorr(1) > 0.05
    # while returns themselves are close to unpredictable
    assert abs(returns.autocorr(1)) < 0.1


def test_opens_gap_from_the_previous_close(sample_frame: pd.DataFrame) -> None:
    gaps = sample_frame["Open"] != sample_frame["Close"].shift()
    assert gaps.iloc[1:].mean() > 0.5


def test_trends_run_both_ways(sample_frame: pd.DataFrame) -> None:
    change = np.log(sample_frame["Close"]).diff(100)
    assert change.max() > 0.15
    assert change.min() < -0.15


def test_volume_is_larger_on_volatile_bars(sample_frame: pd.DataFrame) -> None:
    frame = sample_frame
    true_range = (frame["High"] - frame["Low"]) / frame["Close"]
    assert np.corrcoef(true_range, np.log(frame["Volume"]))[0, 1] > 0.3


# ------------------------------------------------------------------ errors


def test_unknown_name_suggests_a_name() -> None:
    with pytest.raises(ValueError, match=r"unknown sample 'daly'\. Did you mean: daily\? "
                                         r"Available samples: 'daily', 'hourly', 'universe', "
                                         r"'equities'"):
        load_sample("daly")
    with pytest.raises(ValueError, match=r"unknown sample 'weekly'\. Available samples"):
        make_sample("weekly")
    with pytest.raises(ValueError, match=r"unknown sample 3"):
        load_sample(3)  # type: ignore[arg-type]

"""Cases shared by the portfolio tests (test_portfolio, _sim, _kernel, _result): bar builders,
strategies, the hand-computed universe and the sample universes.

Imported as ``from portfolio_cases import ...`` (as the tests import from conftest). The
universes are plain functions: each test module wraps the ones it uses in a module-scoped
fixture of its own.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import nbbacktest as nbb
from nbbacktest.engine.universe import Universe

# ----------------------------------------------------------------- bars and comparisons


def bars(opens, closes, index) -> pd.DataFrame:
    """OHLC bars from opens and closes (high and low one unit outside them)."""
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    return pd.DataFrame({"Open": o, "High": np.maximum(o, c) + 1, "Low": np.minimum(o, c) - 0.5,
                         "Close": c}, index=index)


def same(a, b) -> bool:
    """Equal to the bit, NaN equal to NaN, for stats values of any type."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def traded_bars(result) -> np.ndarray:
    """The bars at which any position changed."""
    return np.flatnonzero(result.positions.diff().fillna(result.positions).abs().sum(axis=1).to_numpy() > 0)


# ----------------------------------------------------------------- strategies


class Momentum(nbb.PortfolioStrategy):
    lookback = nbb.Param(20, low=2, high=250)

    def scores(self, universe):
        return universe.close.pct_change(self.lookback, fill_method=None)


class Fixed(nbb.PortfolioStrategy):
    """The same weight on every symbol at every bar."""

    weight = 0.2

    def weights(self, universe):
        return pd.DataFrame(self.weight, index=universe.index, columns=universe.symbols)


#: Weights frames replayed by :class:`Table`, by key (tests add their own).
TABLES: dict[str, pd.DataFrame] = {}


class Table(nbb.PortfolioStrategy):
    """Replays the weights frame ``TABLES[key]``."""

    key = "hand"

    def weights(self, universe):
        return TABLES[self.key]


#: The one symbol traded by :class:`OneWeight`.
SYMBOL = "BBB"


def _pattern(n: int) -> np.ndarray:
    """1 -> 0.5 (a resize) -> -0.5 (a reversal) -> 0, 37 bars each, over and over."""
    return np.tile(np.repeat([1.0, 0.5, -0.5, 0.0], 37), n // 148 + 1)[:n]


def _cross(close: pd.Series) -> np.ndarray:
    """A long/short SMA cross, half size when the trend is weak."""
    fast, slow = close.rolling(10).mean(), close.rolling(40).mean()
    side = np.sign(fast - slow)
    return (side * np.where((fast / slow - 1).abs() > 0.02, 1.0, 0.5)).fillna(0.0).to_numpy()


SIGNALS = {"pattern": lambda close: _pattern(len(close)), "cross": _cross,
           "levered": lambda close: 1.5 * _cross(close)}


class OneSignal(nbb.Strategy):
    """A single-instrument strategy: the signal ``SIGNALS[kind]``."""

    kind = "pattern"

    def signals(self, data):
        return pd.Series(SIGNALS[self.kind](data["Close"]), index=data.index)


class OneWeight(nbb.PortfolioStrategy):
    """:class:`OneSignal`'s signal as the weight of :data:`SYMBOL`, 0 on every other symbol."""

    kind = "pattern"

    def weights(self, universe):
        w = pd.DataFrame(0.0, index=universe.index, columns=universe.symbols)
        w[SYMBOL] = SIGNALS[self.kind](universe.close[SYMBOL])
        return w


# ----------------------------------------------------------------- the hand-computed case

HAND_INDEX = pd.date_range("2024-01-01", periods=6, freq="D")
HAND = {
    "A": bars([100, 100, 104, 110, 112, 115], [101, 102, 106, 108, 114, 116], HAND_INDEX),
    "B": bars([50, 50, 52, 48, 46, 45], [49, 51, 50, 47, 45, 44], HAND_INDEX),
    "C": bars([20, 20, 19, 18, 18.5, 19], [20.5, 19.5, 18.5, 18, 19, 19.5], HAND_INDEX),
}
# Decided at bar 0's close: A 0.5, B 0.3, C -0.2; at bar 2's close: A 0.3 (a resize),
# B -0.3 (a reversal), C -0.2 (unchanged: no trade).
TABLES["hand"] = pd.DataFrame([[0.5, 0.3, -0.2]] * 2 + [[0.3, -0.3, -0.2]] * 4,
                              index=HAND_INDEX, columns=["A", "B", "C"])


def hand_result():
    """The hand-computed case's backtest (10,000 cash, commission 0.1 %)."""
    return nbb.backtest(Table(key="hand"), HAND, cash=10_000, commission=0.001)


def hand_universe() -> Universe:
    return Universe.from_frames(HAND)


# ----------------------------------------------------------------- sample universes


def sample_universe() -> Universe:
    """The packaged sample: 10 symbols x 2500 bars."""
    return Universe.from_frames(nbb.load_sample("universe"))


def quirky_frames() -> dict[str, pd.DataFrame]:
    """Six sample symbols over 300 bars: one lists at bar 50, one delists after bar 200, one
    misses bar 120."""
    frames = nbb.load_sample("universe")
    out = {symbol: frames[symbol].iloc[:300] for symbol in list(frames)[:6]}
    names = list(out)
    out[names[1]] = out[names[1]].iloc[50:]
    out[names[2]] = out[names[2]].iloc[:201]
    out[names[3]] = out[names[3]].drop(out[names[3]].index[120])
    return out


def random_universe() -> Universe:
    """Twelve random walks over 250 business days (no ties in any return)."""
    rng = np.random.default_rng(7)
    index = pd.bdate_range("2023-01-02", periods=250)
    frames = {}
    for k in range(12):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, len(index))))
        opens = close * (1 + rng.normal(0, 0.002, len(index)))
        frames[f"S{k:02d}"] = bars(opens, close, index)
    return Universe.from_frames(frames)


def five_symbols(sample: Universe) -> Universe:
    """The sample's first five symbols over its first 260 bars."""
    return Universe.from_frames({s: sample[s].iloc[:260] for s in list(sample)[:5]})

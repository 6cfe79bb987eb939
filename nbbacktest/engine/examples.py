"""Example strategies: the SMA crossover written both ways (vectorized and event-driven).

Used by ``python -m nbbacktest demo``, the benchmarks and the docstring examples;
the two classes trade identically (the fill model is shared).

>>> from nbbacktest.engine.examples import SmaCross, SmaCrossEvent
>>> from nbbacktest import backtest, load_sample
>>> data = load_sample("daily")
>>> backtest(SmaCross(), data).stats["trades"] == backtest(SmaCrossEvent(), data).stats["trades"]
True
"""

from __future__ import annotations

import pandas as pd

from nbbacktest.engine.orders import Bar
from nbbacktest.engine.params import Param
from nbbacktest.engine.strategy import Strategy


def sma(values: pd.Series, n: int) -> pd.Series:
    """The simple moving average of the last ``n`` values (NaN for the first ``n - 1``)."""
    return values.rolling(n).mean()


class SmaCross(Strategy):
    """Long while the fast simple moving average is above the slow one."""

    fast = Param(10, low=2, high=100, step=5, doc="fast SMA length")
    slow = Param(30, low=5, high=300, step=10, doc="slow SMA length")

    def signals(self, data: pd.DataFrame) -> pd.Series:
        # self.I: each distinct SMA is computed once per engine, however many points use it
        close = data["Close"]
        return (self.I(sma, close, self.fast) > self.I(sma, close, self.slow)).astype(float)


class SmaCrossEvent(Strategy):
    """The same crossover, bar by bar."""

    fast = Param(10, low=2, high=100, step=5, doc="fast SMA length")
    slow = Param(30, low=5, high=300, step=10, doc="slow SMA length")

    def init(self) -> None:
        self.fast_sma = self.I(sma, self.data["Close"], self.fast)
        self.slow_sma = self.I(sma, self.data["Close"], self.slow)

    def next(self, bar: Bar) -> None:
        above = self.fast_sma[bar.i] > self.slow_sma[bar.i]
        if above and not self.position:
            self.buy()
        elif not above and self.position:
            self.close()

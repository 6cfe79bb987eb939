"""One local ipyparallel cluster (2 engines) for every parallel test, with finite timeouts."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import nbbacktest as nbb


class SmaCross(nbb.Strategy):
    """The sweeps' reference strategy (defined in a test module: shipped by value)."""

    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)

    def signals(self, data):
        close = data["Close"]
        return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)


#: Source of a slow strategy for tests that run cells in a real kernel (its own process).
KERNEL_SLEEPY = """
import time
import nbbacktest as nbb

class Sleepy(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=200)
    def signals(self, data):
        time.sleep(0.1)
        return (data["Close"] > data["Close"].rolling(self.fast).mean()).astype(float)
"""


class Fragile(SmaCross):
    """Raises for fast=10: the failing runs of the display tests."""

    def signals(self, data):
        if self.fast == 10:
            raise ValueError("fast=10 is not allowed")
        return super().signals(data)


class Sleepy(nbb.Strategy):
    """Each run sleeps ``_pause`` seconds first: slow enough to cancel or measure mid-sweep.

    ``_pause`` is not a param (underscore); a test subclasses to change it.
    """

    fast = nbb.Param(10, low=2, high=200)
    _pause = 0.05

    def signals(self, data):
        time.sleep(self._pause)
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


class Knobs(nbb.Strategy):
    """One param of every kind the widgets have a control for."""

    fast = nbb.Param(10, low=2, high=50, step=2, doc="average length")
    band = nbb.Param(0.0, low=0.0, high=0.05)
    long_only = True
    kind = nbb.Param("sma", choices=["sma", "ema"])
    label = "x"

    def signals(self, data):
        close = data["Close"]
        average = close.rolling(self.fast).mean() if self.kind == "sma" else close.ewm(span=self.fast).mean()
        signal = (close > average * (1 + self.band)).astype(float)
        return signal if self.long_only else signal * 2 - 1


@pytest.fixture(scope="session")
def cluster():
    """A real local cluster of 2 engines, stopped at the end of the session."""
    started = nbb.Cluster(engines=2, timeout=120)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def daily() -> pd.DataFrame:
    return nbb.load_sample("daily")


@pytest.fixture(scope="session")
def small_universe() -> dict[str, pd.DataFrame]:
    universe = nbb.load_sample("universe")
    return {symbol: universe[symbol].iloc[:600] for symbol in list(universe)[:3]}

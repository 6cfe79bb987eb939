"""One local ipyparallel cluster (2 engines) for every parallel test, with finite timeouts."""

from __future__ import annotations

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

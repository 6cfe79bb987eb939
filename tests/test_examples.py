"""Tests of nbbacktest.engine.examples: the shipped strategies the docs and benchmarks use."""

from __future__ import annotations

import pandas as pd

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent


def test_the_vectorized_and_the_event_driven_crossover_trade_alike():
    data = nbb.load_sample("daily")
    vector = nbb.backtest(SmaCross(fast=5, slow=20), data, commission=0.001)
    event = nbb.backtest(SmaCrossEvent(fast=5, slow=20), data, commission=0.001)
    assert vector.stats["trades"] > 10
    pd.testing.assert_frame_equal(vector.trades, event.trades)
    pd.testing.assert_series_equal(vector.equity, event.equity)


def test_the_examples_declare_their_ranges():
    for cls in (SmaCross, SmaCrossEvent):
        params = cls.params()
        assert list(params) == ["fast", "slow"]
        assert (params["fast"].low, params["slow"].high) == (2, 300) and params["fast"].step == 5

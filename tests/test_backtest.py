"""Tests of nbbacktest.engine.backtest: backtest(), simulate, the stats-only path and run seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.backtest import (
    RunSeeds,
    derive_seed,
    follow_targets,
    simulate,
    simulate_stats,
)
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent
from nbbacktest.engine.types import PreparedData, Settings
from nbbacktest.errors import DataError, StrategyError


def test_derive_seed_depends_on_seed_params_and_symbol_only():
    base = derive_seed(0, {"fast": 10, "slow": 30})
    assert base == derive_seed(0, {"slow": 30, "fast": 10})
    assert len({base, derive_seed(1, {"fast": 10, "slow": 30}), derive_seed(0, {"fast": 11, "slow": 30}),
                derive_seed(0, {"fast": 10, "slow": 30}, "AAA")}) == 4
    assert 0 <= base < 2**63


@pytest.mark.parametrize("symbol", [None, "AAA", "{odd}"])
def test_run_seeds_match_derive_seed(symbol):
    seeds = RunSeeds(7)
    names = ("slow", "fast", "{x}")
    for values in ((30, 10, "a"), (20, 5, "{}"), (1.5, None, True)):
        assert seeds(names, values, symbol) == derive_seed(7, dict(zip(names, values)), symbol)


def test_backtest_seeds_the_run_from_the_params_as_a_sweep_does():
    result = nbb.backtest(SmaCross(fast=5), nbb.load_sample("daily"), seed=3)
    assert result.seed == derive_seed(3, {"fast": 5, "slow": 30})
    with pytest.raises(TypeError, match="seed must be an int, got float 1.0"):
        nbb.backtest(SmaCross(), nbb.load_sample("daily"), seed=1.0)  # type: ignore[arg-type]


def test_backtest_runs_one_instrument_and_says_how_to_run_a_universe():
    universe = nbb.load_sample("universe")
    symbol = next(iter(universe))
    with pytest.raises(DataError, match=rf"universe of {len(universe)} symbols: pass one frame "
                                        rf"such as data\['{symbol}'\]"):
        nbb.backtest(SmaCross(), universe)  # type: ignore[arg-type]


def test_simulate_runs_a_private_copy_and_wraps_user_errors():
    class Broken(nbb.Strategy):
        n = 3

        def signals(self, data):
            raise KeyError("Colse")

    data = PreparedData.from_frame(nbb.load_sample("daily"))
    with pytest.raises(StrategyError, match=r"Broken\(n=3\): signals raised KeyError: 'Colse'") as caught:
        simulate(Broken(), data, Settings(), 0)
    assert isinstance(caught.value.__cause__, KeyError)
    strategy = SmaCrossEvent()
    simulate(strategy, data, Settings(), 0)
    assert strategy._runner is None and "data" not in vars(strategy)  # the caller's instance holds nothing


def test_simulate_stats_runs_a_private_instance_as_it_is():
    data = PreparedData.from_frame(nbb.load_sample("daily"))
    strategy = SmaCross()
    stats = simulate_stats(strategy, data, Settings(commission=0.001), 4, private=True)
    assert stats == simulate(SmaCross(), data, Settings(commission=0.001), 4).stats
    assert strategy.seed == 4 and "data" in vars(strategy)  # this very instance ran


def test_follow_targets_trades_only_where_the_target_changes():
    frame = nbb.load_sample("daily").iloc[:6]
    data = PreparedData.from_frame(frame)
    exposures = np.array([1.0, 1.0, 0.0, 0.0, -1.0, -1.0])
    ledger = follow_targets(exposures, data, Settings())
    assert ledger.bars.tolist() == [1, 3, 5]  # decided at 0, 2, 4: filled at the next opens
    at_close = follow_targets(exposures, data, Settings(fill="close", close_at_end=True))
    assert at_close.bars.tolist() == [0, 2, 4, 5]  # and close_at_end's change at the last close
    assert at_close.held()[-1] == 0.0
    last_bar_only = follow_targets(np.array([0.0] * 5 + [1.0]), data, Settings())
    assert last_bar_only.bars.tolist() == []  # decided at the last close: no next open
    pd.testing.assert_index_equal(data.index, frame.index)


class _Given(nbb.Strategy):
    """Signals computed before the run: a point that allocates nothing of its own."""

    fast = nbb.Param(10, low=2, high=100)
    given: pd.Series | None = None

    def signals(self, data):
        return type(self).given


def test_a_sweep_point_allocates_no_array_the_length_of_the_data():
    import tracemalloc

    n = 300_000
    index = pd.date_range("2020-01-01", periods=n, freq="min")
    close = pd.Series(100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 1e-3, n))), index)
    frame = pd.DataFrame({"Open": close, "High": close, "Low": close, "Close": close})
    _Given.given = (close > close.rolling(2_000).mean()).astype(float)
    data = PreparedData.from_frame(frame)
    returns = np.empty(n, dtype=np.float32)
    simulate_stats(_Given(), data, Settings(), 0, returns_out=returns)  # the data's arrays derived
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        stats = simulate_stats(_Given(), data, Settings(), 0, private=True, returns_out=returns)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert stats["trades"] > 10
    # The equity goes to the thread's scratch row and every statistic and the returns
    # come from compiled passes over it: what is left is the fills, far below one array.
    assert peak < 0.25 * n * 8, f"a point allocated {peak / (n * 8):.2f} arrays of the data's length"

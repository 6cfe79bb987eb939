"""Plan: the runs of a sweep, their params, symbols and seeds, frames and subsets."""

from __future__ import annotations

import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import SweepError
from nbbacktest.parallel import grid
from nbbacktest.parallel.grid import plan_instances, plan_sweep
from nbbacktest.parallel.plan import Plan


class SmaCross(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)
    stop = 0.0
    kind = nbb.Param("sma", choices=["sma", "ema"])

    def signals(self, data):
        return data["Close"] * 0


class Breakout(nbb.Strategy):
    lookback = 20

    def signals(self, data):
        return data["Close"] * 0


# ---------------------------------------------------------------------- Plan methods
def test_strategy_at_frame_and_subset():
    plan = plan_sweep(SmaCross, {"fast": [5, 10], "slow": [40, 50]}, symbols=["A", "B"])
    assert plan.strategy_at(5) == SmaCross(fast=10, slow=40)
    frame = plan.frame()
    assert list(frame.columns) == ["fast", "slow", "stop", "kind", "symbol"]
    assert isinstance(frame.index, pd.RangeIndex) and len(frame) == 8
    assert frame.loc[5, "fast"] == 10 and frame.loc[5, "symbol"] == "B"
    assert "symbol" not in plan_sweep(SmaCross).frame().columns

    sub = plan.subset([6, 1])
    assert len(sub) == 2 and sub.params(0) == plan.params(6) and sub.symbols == ["A", "B"]
    assert sub.seeds == [plan.seeds[6], plan.seeds[1]] and sub.grid_size == plan.grid_size
    empty = plan.subset([])
    assert len(empty) == 0 and list(empty.frame().columns) == list(frame.columns)
    with pytest.raises(IndexError, match="rows contains 8, outside 0..7"):
        plan.subset([0, 8])


def test_plan_is_compact():
    plan = plan_sweep(SmaCross, {"fast": range(2, 101), "slow": range(5, 301)}, symbols=["A", "B"])
    # Runs of one point on several symbols share one tuple.
    assert plan.values[0] is plan.values[1]
    assert plan.class_index is None and isinstance(plan.values[0], tuple)


def test_a_mixed_plan_has_no_single_strategy_or_names():
    plan = plan_instances([SmaCross(fast=5), Breakout(10)], symbols=["A"])
    assert plan.is_mixed and plan.class_at(1) is Breakout and plan.names_at(0)[0] == "fast"
    assert list(plan.frame().columns) == ["strategy", "params", "symbol"]
    with pytest.raises(SweepError, match="Plan.strategy is undefined: the plan mixes 2 strategy classes"):
        plan.strategy
    with pytest.raises(SweepError, match="Plan.names is undefined"):
        plan.names
    assert repr(plan) == "<Plan SmaCross, Breakout: 2 runs (1 symbols), grid of 2>"


def test_grid_still_exports_plan():
    assert grid.Plan is Plan and isinstance(plan_sweep(SmaCross), Plan)

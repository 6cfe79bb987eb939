from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.engine.period_returns import period_returns
from nbbacktest.errors import SweepError
from nbbacktest.parallel.rows import RowsBuilder, StatSchema
from nbbacktest.parallel.run_returns import (
    DEFAULT_RETURNS_BUDGET,
    RETURNS_FILE,
    KeptReturns,
    ReturnsCollector,
    ReturnsPlan,
    check_budget,
    plan_returns,
    recompute,
)
from nbbacktest.parallel.spec import SweepSpec

GRID = {"fast": [5, 10, 20], "slow": [40, 80]}


def plain_returns(data, fast, slow, per=1):
    result = nbb.backtest(SmaCross(fast, slow), data)
    return period_returns(result.equity.to_numpy(), 10_000.0, per).astype(np.float32)


def test_plan_keeps_every_run_within_the_budget(daily):
    plan = plan_returns(100, daily, DEFAULT_RETURNS_BUDGET, seed=0)
    assert (plan.bars, plan.periods, plan.bars_per_period, plan.rows) == (2500, 2500, 1, None)
    assert plan.capacity == 100 and all(plan.wants(r) for r in range(100))


def test_plan_over_budget_keeps_the_documented_subsample(daily):
    budget = 50 * 2500 * 4 + 123
    plan = plan_returns(1000, daily, budget, seed=7)
    expected = sorted(np.random.default_rng(7).choice(1000, size=49, replace=False).tolist())
    assert list(plan.rows) == expected
    assert plan.capacity == 50 and plan.capacity * plan.row_bytes <= budget
    assert plan_returns(1000, daily, budget, seed=7) == plan  # deterministic from the seed
    assert plan_returns(1000, daily, budget, seed=8).rows != plan.rows


def test_plan_keeps_nothing_for_budget_zero_or_a_universe(daily, small_universe):
    assert plan_returns(10, daily, 0, seed=0) is None
    assert plan_returns(10, small_universe, DEFAULT_RETURNS_BUDGET, seed=0) is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "256M"])
def test_bad_budget_is_named(bad):
    with pytest.raises(SweepError, match="returns_budget"):
        check_budget(bad)


def test_collector_and_store_round_trip():
    plan = ReturnsPlan(bars=4, periods=4, bars_per_period=1, runs=5, rows=(1, 3), budget=3 * 16)
    collector = ReturnsCollector(plan, points=3)
    assert collector.slot(0, 4) is None and collector.slot(1, 5) is None  # not kept; other bars
    collector.slot(1, 4)[:] = 1.0
    collector.keep(1)
    chunk = collector.build()
    assert chunk.rows.tolist() == [1] and chunk.values.dtype == np.float32
    assert len(pickle.dumps(chunk)) < 600  # the view travels as its rows only
    assert chunk.without([1]).rows.tolist() == []
    kept = KeptReturns(plan)
    kept.add(chunk)
    assert kept.nbytes == plan.capacity * 16 <= plan.budget
    assert kept.put(3, np.zeros(4)) and kept.put(0, np.zeros(4)) and not kept.put(4, np.zeros(4))
    assert kept.rows().tolist() == [0, 1, 3]
    assert kept.matrix([1, 3]).shape == (4, 2)


def test_rows_carry_the_chunk_returns():
    plan = ReturnsPlan(bars=2, periods=2, bars_per_period=1, runs=3)
    collector = ReturnsCollector(plan, points=2)
    builder = RowsBuilder(StatSchema.current(), collector)
    builder.failed(0, ("ValueError", "x", ""), 0.1)
    collector.slot(2, 2)[:] = 0.5
    collector.keep(2)
    rows = builder.build()
    assert rows.returns.rows.tolist() == [2]
    assert rows.without([2]).returns.rows.tolist() == []


def test_sweep_keeps_each_runs_per_bar_returns(daily):
    sweep = nbb.sweep(SmaCross, daily, grid=GRID, progress=False)
    kept = sweep.kept_returns
    assert kept.rows().tolist() == list(range(6))
    for row in (0, 3, 5):
        params = sweep.plan.params(row)
        assert kept.matrix([row])[:, 0].astype(np.float32).tolist() == plain_returns(
            daily, params["fast"], params["slow"]).tolist()


def test_long_data_is_kept_in_compounded_periods(daily):
    data = daily.iloc[:2000]
    sweep = nbb.sweep(SmaCross, data, grid={"fast": [5, 10], "slow": [40]}, progress=False)
    plan = sweep.spec.returns
    assert plan.periods <= 2520  # 2,000 bars: per bar
    spec = SweepSpec(sweep.plan, sweep.settings, returns=plan_returns(2, data, 10**6, 0, max_periods=300))
    assert (spec.returns.periods, spec.returns.bars_per_period) == (286, 7)
    got = recompute(spec, data, [1])
    assert got[0].tolist() == plain_returns(data, 10, 40, per=7).tolist()


def test_failed_runs_keep_no_returns(daily):
    sweep = nbb.sweep(Fragile, daily, grid={"fast": [5, 10, 20], "slow": [40]}, progress=False)
    assert sweep.failed == 1 and sweep.kept_returns.rows().tolist() == [0, 2]


def test_budget_zero_keeps_nothing_and_the_identity_does_not_change(daily):
    off = nbb.sweep(SmaCross, daily, grid=GRID, returns_budget=0, progress=False)
    on = nbb.sweep(SmaCross, daily, grid=GRID, progress=False)
    assert off.kept_returns is None and off.spec.returns is None
    assert off.spec.identity() == on.spec.identity()
    assert off.results.drop(columns="seconds").equals(on.results.drop(columns="seconds"))


def test_the_budget_keeps_the_subsample_and_never_exceeds_it(daily):
    budget = 3 * 2500 * 4
    sweep = nbb.sweep(SmaCross, daily, grid=GRID, returns_budget=budget, seed=3, progress=False)
    plan = sweep.spec.returns
    assert sweep.kept_returns.rows().tolist() == list(plan.rows) and len(plan.rows) == 2
    sweep.credibility(blocks=4, reps=10)
    kept = sweep.kept_returns
    assert set(kept.rows().tolist()) == set(plan.rows) | {sweep.best_index}
    assert kept.nbytes <= budget


def test_in_process_and_cluster_keep_the_same_returns(daily, cluster):
    for budget in (DEFAULT_RETURNS_BUDGET, 4 * 2500 * 4):
        here = nbb.sweep(SmaCross, daily, grid=GRID, returns_budget=budget, progress=False)
        there = nbb.sweep(SmaCross, daily, grid=GRID, returns_budget=budget, cluster=cluster,
                          progress=False)
        rows = here.kept_returns.rows().tolist()
        assert there.kept_returns.rows().tolist() == rows
        assert np.array_equal(here.kept_returns.matrix(rows), there.kept_returns.matrix(rows))


def test_save_load_and_resume_give_the_same_returns(daily, tmp_path):
    first = nbb.sweep(SmaCross, daily, grid=GRID, save=tmp_path, progress=False)
    assert (tmp_path / RETURNS_FILE).exists()
    rows = first.kept_returns.rows().tolist()
    loaded = nbb.load_sweep(tmp_path)
    assert loaded.kept_returns.rows().tolist() == rows
    assert np.array_equal(loaded.kept_returns.matrix(rows), first.kept_returns.matrix(rows))
    (tmp_path / RETURNS_FILE).unlink()  # a sweep killed before its end wrote none
    resumed = nbb.resume(tmp_path, progress=False)
    assert len(resumed.kept_returns) == 0
    assert resumed.credibility(blocks=4, reps=50) .pbo.pbo == first.credibility(blocks=4, reps=50).pbo.pbo
    assert np.array_equal(resumed.kept_returns.matrix(rows), first.kept_returns.matrix(rows))

"""Robust ranking of a sweep: ``min_trades`` and the neighbourhood stability score."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import SweepError
from nbbacktest.parallel.events import PointDone
from nbbacktest.parallel.progress import ProgressState
from nbbacktest.parallel.ranking import grid_axis, neighbourhood_mean

pytestmark = pytest.mark.timeout(180)

#: Runs that trade once (fast=2) are long over the sample's best 60-bar stretch only.
GRID = {"fast": [2, 5, 10], "slow": [20, 40, 60]}
RUN_ONLY = ["engine", "host", "seconds"]


class Spiky(nbb.Strategy):
    """fast=2: one hindsight-picked trade with a Sharpe above every SMA cross's; else an SMA cross."""

    fast = nbb.Param(5, low=2)
    slow = nbb.Param(20, low=3)

    def signals(self, data):
        close = data["Close"]
        if self.fast == 2:
            steps = np.log(close).diff()
            quality = (steps.rolling(60).mean() / steps.rolling(60).std()).to_numpy()
            end = int(np.nanargmax(quality))
            target = pd.Series(0.0, index=close.index)
            target.iloc[end - 60:end] = 1.0
            return target
        return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)


def spiky(**options):
    return nbb.sweep(Spiky, nbb.load_sample("daily"), GRID, progress=False, **options)


# ------------------------------------------------------------------ the score
def test_neighbourhood_mean_on_a_hand_computed_3x3_grid():
    points = [(f, s) for f in (5, 10, 15) for s in (20, 40, 60)]
    values = [0.0, 0.0, 9.0,
              1.0, 1.0, 1.0,
              2.0, 2.0, math.nan]
    expected = [
        (0 + 1 + 0) / 3,          # (5, 20): (10, 20), (5, 40)
        (0 + 0 + 9 + 1) / 4,      # (5, 40): (5, 20), (5, 60), (10, 40)
        (9 + 0 + 1) / 3,          # (5, 60): (5, 40), (10, 60) -- the spike
        (1 + 0 + 2 + 1) / 4,      # (10, 20)
        (1 + 0 + 2 + 1 + 1) / 5,  # (10, 40): all four neighbours
        (1 + 9 + 1) / 3,          # (10, 60): (15, 60) is NaN, skipped
        (2 + 1 + 2) / 3,          # (15, 20)
        (2 + 1 + 2) / 3,          # (15, 40): (15, 60) skipped
        math.nan,                 # (15, 60): its own value is NaN
    ]
    np.testing.assert_allclose(neighbourhood_mean(values, points), expected, equal_nan=True)
    # The grid's order does not matter, only the params' values.
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    shuffled = neighbourhood_mean([values[i] for i in order], [points[i] for i in order])
    np.testing.assert_allclose(shuffled, [expected[i] for i in order], equal_nan=True)


def test_runs_of_different_groups_are_never_neighbours():
    points = [(1,), (2,), (1,), (2,)]
    score = neighbourhood_mean([1.0, 3.0, 10.0, 30.0], points, ["A", "A", "B", "B"])
    assert score.tolist() == [2.0, 2.0, 20.0, 20.0]


def test_grid_axis_sorts_or_keeps_the_order_seen():
    assert grid_axis([3, 1, 2, 1]) == [1, 2, 3]
    assert grid_axis(["x", 1]) == ["x", 1]
    with pytest.raises(ValueError, match="one entry per run"):
        neighbourhood_mean([1.0], [(1,), (2,)])


def test_stability_of_a_sweep_is_the_neighbourhood_mean_and_a_plateau_can_outrank_a_spike():
    sweep = spiky()
    sharpe = sweep.results["sharpe"].to_numpy()
    score = sweep.stability()
    assert score.name == "sharpe_stability" and score.index.equals(sweep.results.index)
    # Row 4 is (5, 40): its neighbours are (2, 40), (10, 40), (5, 20) and (5, 60).
    assert score[4] == pytest.approx((sharpe[4] + sharpe[1] + sharpe[7] + sharpe[3] + sharpe[5]) / 5)
    assert score[0] == pytest.approx((sharpe[0] + sharpe[3] + sharpe[1]) / 3)
    assert sweep.stability("return_pct").name == "return_pct_stability"
    assert sweep.best_stable == sweep.plan.strategy_at(int(np.argmax(score.to_numpy())))
    fig = sweep.table(top=3, rank_by="stability")
    header = list(fig.data[0].header.values)
    assert header[:4] == ["row", "fast", "slow", "<b>sharpe_stability</b>"]
    assert [int(r) for r in fig.data[0].cells.values[0]] == (
        score.sort_values(ascending=False, kind="stable").index[:3].tolist())
    with pytest.raises(SweepError, match="rank_by"):
        sweep.table(rank_by="stable")


def test_stability_skips_runs_with_too_few_trades_and_needs_a_grid():
    sweep = spiky(min_trades=5)
    score = sweep.stability()
    assert score[sweep.results["too_few_trades"]].isna().all()
    sharpe = sweep.results["sharpe"].to_numpy()
    assert score[3] == pytest.approx((sharpe[3] + sharpe[6] + sharpe[4]) / 3)  # (2, 20) skipped
    runs = nbb.run_many([Spiky(5, 20), Spiky(10, 40)], nbb.load_sample("daily"), progress=False)
    with pytest.raises(SweepError, match="grid sweep"):
        runs.stability()
    with pytest.raises(SweepError, match="metric 'sharp'"):
        sweep.stability("sharp")


# ------------------------------------------------------------------ min_trades
def test_without_min_trades_a_one_trade_run_is_best():
    sweep = spiky()
    assert sweep.results.loc[sweep.best_index, "trades"] == 1
    assert "too_few_trades" not in sweep.results


def test_min_trades_keeps_the_rows_marked_but_never_best_nor_the_live_best():
    events: list = []
    sweep = spiky(min_trades=5, on_result=events.append)
    table = sweep.results
    assert len(table) == 9 and table["too_few_trades"].tolist() == (table["trades"] < 5).tolist()
    assert table["too_few_trades"].sum() == 3 and table["too_few_trades"].dtype == bool
    assert table.loc[sweep.best_index, "trades"] >= 5
    eligible = table.loc[~table["too_few_trades"], "sharpe"]
    assert sweep.best_value == eligible.max() and sweep.best_index == eligible.idxmax()
    assert sweep.min_trades == 5 and sweep.spec.summary()["min_trades"] == 5
    done = [e for e in events if isinstance(e, PointDone)]
    assert sorted(e.index for e in done if not e.ranked) == [0, 1, 2]
    state = ProgressState()
    for event in events:
        state.update(event)
    assert state.best_index == sweep.best_index and state.best == sweep.best_value
    assert ProgressState.of(sweep).best_index == sweep.best_index


def test_the_tables_of_a_sweep_with_min_trades_open_with_its_best_run():
    """Rows below min_trades rank after every counted run, whatever their metric."""
    sweep = spiky(min_trades=5)
    shown = sweep.table(top=4).data[0].cells.values
    first_row = [column[0] for column in shown]
    assert first_row[0] == str(sweep.best_index)
    assert sweep.results.loc[sweep.best_index, "sharpe"] < sweep.results["sharpe"].max()
    from nbbacktest.display.tables import rank_rows

    ranked = rank_rows(sweep.results, "sharpe")
    assert ranked.index[0] == sweep.best_index
    assert ranked["too_few_trades"].tolist()[-3:] == [True, True, True]


def test_min_trades_in_run_many():
    instances = [Spiky(2, 20), Spiky(5, 20), Spiky(10, 40)]
    data = nbb.load_sample("daily")
    assert nbb.run_many(instances, data, progress=False).best_index == 0
    runs = nbb.run_many(instances, data, min_trades=5, progress=False)
    assert runs.best_index != 0 and runs.results["too_few_trades"].tolist() == [True, False, False]


def test_cluster_sweep_gives_the_in_process_results(cluster):
    here = spiky(min_trades=5)
    there = spiky(min_trades=5, cluster=cluster)
    pd.testing.assert_frame_equal(there.results.drop(columns=RUN_ONLY),
                                  here.results.drop(columns=RUN_ONLY), check_exact=True)
    assert there.best_index == here.best_index and there.best_value == here.best_value


def test_resume_and_load_sweep_keep_the_rule(tmp_path):
    first = spiky(min_trades=5, save=tmp_path / "run")
    again = nbb.resume(tmp_path / "run", progress=False)
    saved = nbb.load_sweep(tmp_path / "run")
    resumed = spiky(min_trades=5, save=tmp_path / "run", resume=True)
    for other in (again, saved, resumed):
        assert other.min_trades == 5 and other.best_index == first.best_index
        assert other.results.drop(columns=RUN_ONLY).equals(first.results.drop(columns=RUN_ONLY))
    with pytest.raises(SweepError):  # another rule is another sweep
        spiky(save=tmp_path / "run", resume=True)


@pytest.mark.parametrize(("value", "error"), [
    (-1, SweepError), (2.5, TypeError), ("5", TypeError), (True, TypeError), (None, TypeError),
])
def test_a_bad_min_trades_is_an_error_naming_it(value, error):
    with pytest.raises(error, match="min_trades"):
        spiky(min_trades=value)
    with pytest.raises(error, match="min_trades"):
        nbb.run_many([Spiky()], nbb.load_sample("daily"), min_trades=value, progress=False)


def test_an_empty_score_has_no_best_stable():
    class Broken(Spiky):
        def signals(self, data):
            raise ValueError("no")

    with pytest.warns(nbb.NbbacktestWarning):
        sweep = nbb.sweep(Broken, nbb.load_sample("daily"), {"fast": [5, 10]}, progress=False)
    assert sweep.stability().isna().all() and sweep.best_stable is None

"""Walk-forward analysis: folds, warm-up in the engine, the choice per fold, the cluster, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import DataError, SweepError
from nbbacktest.parallel.walk_forward import WalkForwardResult, fold_windows
from tests.conftest import SmaCross

GRID = {"fast": [5, 20], "slow": [30, 60]}
RUN_COLUMNS = ["engine", "host", "seconds"]


class AboveAverage(nbb.Strategy):
    """Long above the 50-bar average: its indicator needs 50 bars of history."""

    length = 50

    def signals(self, data):
        close = data["Close"]
        return (close > close.rolling(self.length).mean()).astype(float)


class AboveAverageEvents(nbb.Strategy):
    """AboveAverage's rule, bar by bar."""

    length = 50

    def init(self):
        self.average = self.indicator(lambda d: d["Close"].rolling(self.length).mean())

    def next(self, bar):
        above = bar.close > self.average[bar.i]
        if above and not self.position:
            self.buy()
        elif not above and self.position:
            self.close()


def _given(exposures: pd.Series) -> nbb.Strategy:
    """A strategy that returns ``exposures`` (on whatever frame it runs on)."""

    class Given(nbb.Strategy):
        _exposures = exposures

        def signals(self, data):
            return self._exposures.reindex(data.index)

    return Given()


# ------------------------------------------------------------------ folds
def test_rolling_folds_on_the_daily_sample(daily):
    folds = fold_windows(daily.index, "3Y", "6M")
    index = daily.index
    assert len(folds) == 13
    first = folds[0]
    assert (index[first.train_begin], index[first.train_end - 1]) == (
        pd.Timestamp("2014-01-02"), pd.Timestamp("2016-12-30"))
    assert (index[first.test_begin], index[first.test_end - 1]) == (
        pd.Timestamp("2017-01-02"), pd.Timestamp("2017-06-30"))
    assert index[folds[-1].test_begin] == pd.Timestamp("2023-01-02")
    assert folds[-1].test_end <= len(index)
    for before, after in zip(folds, folds[1:]):
        assert after.test_begin == before.test_end  # consecutive test windows
    for fold in folds:
        assert fold.train_end == fold.test_begin
        start = index[0] + pd.DateOffset(months=6 * (fold.number - 1))
        assert fold.train_begin == index.searchsorted(start)  # the window rolls by test
        assert index[fold.test_begin] >= start + pd.DateOffset(years=3)


def test_anchored_folds_train_from_the_first_bar(daily):
    rolling = fold_windows(daily.index, "3Y", "6M")
    anchored = fold_windows(daily.index, "3Y", "6M", anchored=True)
    assert [f.train_begin for f in anchored] == [0] * 13
    assert [f[2:] for f in anchored] == [f[2:] for f in rolling]


def test_folds_in_bars():
    index = pd.date_range("2020-01-01", periods=2500, freq="B")
    folds = fold_windows(index, 750, 250)
    assert [tuple(f) for f in folds[:2]] == [(1, 0, 750, 750, 1000), (2, 250, 1000, 1000, 1250)]
    assert folds[-1].test_end == 2500 and len(folds) == 7
    assert fold_windows(index, 750, 250, anchored=True)[-1] == (7, 0, 2250, 2250, 2500)


# ------------------------------------------------------------------ warm-up in the engine
def test_a_window_equals_a_run_forced_flat_before_it_trade_by_trade(daily):
    start, end = 1000, 1500
    data = daily.iloc[:end]
    window = nbb.backtest(SmaCross(10, 30), data, trade_start=start, commission=0.001)
    full = SmaCross(10, 30).signals(data)
    flat = full.where(np.arange(end) >= start, 0.0)
    forced = nbb.backtest(_given(flat), data, commission=0.001)
    assert len(window.trades) > 3
    pd.testing.assert_frame_equal(window.trades, forced.trades)
    pd.testing.assert_series_equal(window.equity, forced.equity.iloc[start:])
    assert (forced.equity.iloc[:start] == 10_000.0).all()
    # The stats cover the window: a plain run on the window's bars with the same signals.
    alone = nbb.backtest(_given(full), data.iloc[start:], commission=0.001)
    pd.testing.assert_frame_equal(window.trades, alone.trades)
    assert window.stats.drop("buy_hold_return_pct").equals(alone.stats.drop("buy_hold_return_pct"))
    assert window.stats["buy_hold_return_pct"] == pytest.approx(alone.stats["buy_hold_return_pct"])
    assert window.stats["start"] == daily.index[start]


@pytest.mark.parametrize("strategy", [AboveAverage(), AboveAverageEvents()], ids=["signals", "next"])
def test_a_50_bar_indicator_trades_from_the_first_bar_of_the_window(daily, strategy):
    close = daily["Close"]
    above = (close > close.rolling(50).mean()).to_numpy()
    start = int(np.flatnonzero(above[1000:])[0]) + 1000  # the window opens above the average
    result = nbb.backtest(strategy, daily.iloc[:start + 300], trade_start=daily.index[start])
    assert result.equity.index[0] == daily.index[start]
    assert result.trades["entry_time"].iloc[0] == daily.index[start + 1]  # decided at the first close
    cold = nbb.backtest(strategy, daily.iloc[start:start + 300])
    assert cold.trades["entry_time"].iloc[0] >= daily.index[start + 50]  # without history: 50 bars late


def test_both_paths_trade_a_window_alike(daily):
    data = daily.iloc[:1600]
    vector = nbb.backtest(AboveAverage(), data, trade_start=1200, commission=0.001)
    events = nbb.backtest(AboveAverageEvents(), data, trade_start=1200, commission=0.001)
    pd.testing.assert_frame_equal(vector.trades, events.trades)
    pd.testing.assert_series_equal(vector.equity, events.equity)


def test_trade_start_outside_the_data_is_an_error(daily):
    with pytest.raises(DataError, match="trade_start"):
        nbb.backtest(SmaCross(), daily, trade_start="2030-01-01")
    with pytest.raises(TypeError, match="trade_start"):
        nbb.backtest(SmaCross(), daily, trade_start=1.5)


# ------------------------------------------------------------------ the walk-forward
@pytest.fixture(scope="module")
def wf(daily) -> WalkForwardResult:
    return nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="1Y", commission=0.001,
                            progress=False)


def test_each_fold_chooses_the_in_sample_best_of_plain_backtests(wf, daily):
    assert len(wf.folds) == len(wf.windows) == 6
    for fold, row in zip(wf.windows, wf.folds.itertuples()):
        scores = {}
        for fast in GRID["fast"]:
            for slow in GRID["slow"]:
                run = nbb.backtest(SmaCross(fast, slow), daily.iloc[:fold.train_end],
                                   trade_start=fold.train_begin, commission=0.001)
                scores[(fast, slow)] = run.stats["sharpe"]
        best = max(scores, key=lambda k: scores[k])  # the first of equals, in grid order
        assert (row.fast, row.slow) == best
        assert row.is_sharpe == scores[best]
        oos = nbb.backtest(SmaCross(*best), daily.iloc[:fold.test_end], trade_start=fold.test_begin,
                           commission=0.001)
        assert row.oos_sharpe == oos.stats["sharpe"]
        assert row.trades == oos.stats["trades"]
        assert row.test_start == oos.equity.index[0] and row.test_end == oos.equity.index[-1]


def test_stitched_equity_buy_and_hold_and_efficiency(wf, daily):
    folds, equity = wf.folds, wf.equity
    span = daily.index[wf.windows[0].test_begin:wf.windows[-1].test_end]
    assert equity.index.equals(span) and wf.buy_and_hold.index.equals(span)
    growth = np.prod(1 + folds["oos_return_pct"].to_numpy() / 100)
    assert equity.iloc[-1] == pytest.approx(10_000 * growth, rel=1e-12)
    assert wf.buy_and_hold.iloc[-1] == pytest.approx(
        10_000 * daily["Close"].iloc[wf.windows[-1].test_end - 1] / daily["Close"].loc[span[0]])
    usable = folds["is_cagr_pct"] > 0
    assert wf.efficiency == pytest.approx((folds.oos_cagr_pct[usable] / folds.is_cagr_pct[usable]).mean())
    assert "6 rolling folds (train 3Y, test 1Y)" in repr(wf)


def test_min_trades_never_chooses_a_point_with_fewer_in_sample_trades(daily):
    wf = nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="1Y", min_trades=10**6,
                          progress=False)
    assert wf.folds["fast"].isna().all() and (wf.equity == 10_000).all()


def test_on_the_cluster_equals_in_process(cluster, wf, daily):
    remote = nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="1Y", commission=0.001,
                              cluster=cluster, progress=False)
    assert remote.sweep.engines == 2
    pd.testing.assert_frame_equal(remote.sweep.results.drop(columns=RUN_COLUMNS),
                                  wf.sweep.results.drop(columns=RUN_COLUMNS))
    pd.testing.assert_frame_equal(remote.folds, wf.folds)
    pd.testing.assert_series_equal(remote.equity, wf.equity)


def test_save_and_resume_give_the_same_folds(tmp_path, wf, daily):
    first = nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="1Y", commission=0.001,
                             save=tmp_path / "wf", progress=False)
    again = nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="1Y", commission=0.001,
                             save=tmp_path / "wf", resume=True, progress=False)
    assert again.sweep._restored == len(again.sweep)  # nothing ran again
    pd.testing.assert_frame_equal(again.folds, first.folds)
    pd.testing.assert_frame_equal(first.folds, wf.folds)
    with pytest.raises(SweepError):  # other windows are another sweep: not resumed from it
        nbb.walk_forward(SmaCross, daily, GRID, train="3Y", test="6M", commission=0.001,
                         save=tmp_path / "wf", resume=True, progress=False)


def test_views(wf):
    assert [trace.name for trace in wf.plot().data] == ["out of sample", "buy & hold"]
    assert len(wf.plot().layout.shapes) == 6
    assert [trace.name for trace in wf.params_chart().data] == ["fast", "slow"]
    assert list(wf.table().data[0].header.values)[:5] == [
        "fold", "train_start", "train_end", "test_start", "test_end"]
    bundle = wf._repr_mimebundle_()
    assert "<table" in bundle["text/html"] and bundle["text/plain"].startswith("<WalkForwardResult")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("options", "message"), [
    ({"train": "20Y"}, "train='20Y' is longer than the data"),
    ({"test": "15Y"}, "test='15Y' is longer than the data"),
    ({"train": "0D"}, "train='0D' is not a positive length"),
    ({"test": 0}, "test=0 is shorter than one bar"),
    ({"train": 100, "test": "1M"}, "must both be numbers of bars"),
    ({"test": "1h"}, "test='1h' is shorter than one bar"),
    ({"train": "8Y", "test": "2Y"}, "no complete fold fits: train='8Y' plus test='2Y'"),
    ({"train": 2400, "test": 200}, "no complete fold fits"),
    ({"train": "3 fortnights"}, "train='3 fortnights' is not a length"),
    ({"metric": "sharp"}, "metric 'sharp' is not a numeric stat. Did you mean: sharpe?"),
])
def test_bad_input_names_the_argument(daily, options, message):
    with pytest.raises(SweepError, match=message.replace("?", r"\?")):
        nbb.walk_forward(SmaCross, daily, GRID, progress=False, **options)


def test_a_universe_is_not_supported_yet(small_universe):
    with pytest.raises(SweepError, match="universe is not supported yet"):
        nbb.walk_forward(SmaCross, small_universe, GRID, progress=False)


def test_an_unknown_setting_is_named(daily):
    with pytest.raises(TypeError, match="walk_forward got an unknown option 'comission'"):
        nbb.walk_forward(SmaCross, daily, GRID, comission=0.001, progress=False)

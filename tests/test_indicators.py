"""Strategy.I and its memo: computed once per process per data, read-only, within a budget."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import SmaCross as RollingCross

import nbbacktest as nbb
from nbbacktest.engine import indicators
from nbbacktest.engine.backtest import simulate_stats
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent, sma
from nbbacktest.engine.indicators import compute_indicator, memo_info, set_indicator_memo
from nbbacktest.engine.types import PreparedData, Settings

RUN_ONLY = ["engine", "host", "seconds"]
GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}


@pytest.fixture()
def memo():
    """The memo on, with its default budget, and its counters' change over the test."""
    old = set_indicator_memo(indicators.DEFAULT_MEMO_MB)
    yield memo_info
    set_indicator_memo(old)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return nbb.load_sample("hourly")


def prepared(frame: pd.DataFrame) -> PreparedData:
    return PreparedData.from_frame(frame)


#: The arguments of each real call of :func:`counted_sma`.
SEEN: list[tuple] = []


def counted_sma(values, n):
    """``sma``, counting its calls in SEEN (a function of a module: keyed by name and code,
    not by the globals it reads)."""
    SEEN.append((values, n))
    return sma(values, n)


def calls_counted(fn):
    """``fn`` and a list that gets one item per real call (``fn`` must be ``sma``)."""
    assert fn is sma
    SEEN.clear()
    return counted_sma, SEEN


# ----------------------------------------------------------------- the API
def test_each_distinct_indicator_is_computed_once_per_data(memo, daily):
    counted, seen = calls_counted(sma)

    class Cross(nbb.Strategy):
        fast, slow = 10, 30

        def signals(self, data):
            close = data["Close"]
            return (self.I(counted, close, self.fast) > self.I(counted, close, self.slow)).astype(float)

    before = memo()
    sweep = nbb.sweep(Cross, daily, {"fast": [5, 10, 20], "slow": [20, 30, 50]}, progress=False)
    after = memo()
    assert sweep.results.status.eq("done").all()
    assert sorted(n for _, n in seen) == [5, 10, 20, 30, 50]  # 18 asked, 5 distinct
    assert (after.misses - before.misses, after.hits - before.hits) == (5, 13)


def test_results_equal_fn_of_the_arguments_and_a_column_is_keyed_by_which_it_is(memo, daily):
    data = prepared(daily)
    frame = data.run_frame()
    close, open_ = frame["Close"], frame["Open"]
    got = compute_indicator(data, sma, (close, 5), {})
    pd.testing.assert_series_equal(got, close.rolling(5).mean())
    # another run's frame: the same column, so the same entry
    again = compute_indicator(data, sma, (data.run_frame()["Close"], 5), {})
    assert np.shares_memory(again.to_numpy(), got.to_numpy())
    other = compute_indicator(data, sma, (open_, 5), {})
    pd.testing.assert_series_equal(other, open_.rolling(5).mean())
    as_array = compute_indicator(data, np.cumsum, (close.to_numpy(),), {})
    assert np.array_equal(as_array, np.cumsum(daily["Close"].to_numpy()))
    assert compute_indicator(data, np.cumsum, (data.close,), {}) is not as_array  # a view of it
    assert np.shares_memory(compute_indicator(data, np.cumsum, (data.close,), {}), as_array)
    # keyword arguments and their types are in the key: 5 and 5.0 differ
    by_name = compute_indicator(data, sma, (), {"values": close, "n": 5})
    pd.testing.assert_series_equal(by_name, got)
    with pytest.raises(ValueError):
        compute_indicator(data, sma, (close, 5.0), {})  # computed, not taken from n=5


def test_values_are_read_only_and_each_caller_gets_its_own_view(memo, daily):
    data = prepared(daily)
    close = data.run_frame()["Close"]
    first = compute_indicator(data, sma, (close, 7), {})
    assert not first.to_numpy().flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first.to_numpy()[10] = 0.0
    first.iloc[10] = 0.0  # pandas copies on write: the caller's copy changes, not the memo's
    first.name = "renamed"
    first.index = range(len(first))
    second = compute_indicator(data, sma, (close, 7), {})
    assert second.name == "Close" and isinstance(second.index, pd.DatetimeIndex)
    assert second.iloc[10] == close.rolling(7).mean().iloc[10]
    array = compute_indicator(data, np.cumsum, (data.close,), {})
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 1.0
    with pytest.raises(ValueError):
        array.flags.writeable = True
    array.shape = (len(array), 1)
    assert compute_indicator(data, np.cumsum, (data.close,), {}).shape == (len(array),)
    pair = compute_indicator(data, lambda c: (c.cumsum(), [c.max()]), (close,), {})
    assert isinstance(pair, tuple) and not pair[0].to_numpy().flags.writeable


def test_an_indicator_of_an_indicator_is_keyed_by_the_entry(memo, daily):
    data = prepared(daily)
    close = data.run_frame()["Close"]
    counted, seen = calls_counted(sma)
    inner = compute_indicator(data, sma, (close, 5), {})
    before = memo()
    outer = compute_indicator(data, counted, (inner, 3), {})
    again = compute_indicator(data, counted, (compute_indicator(data, sma, (close, 5), {}), 3), {})
    pd.testing.assert_series_equal(outer, close.rolling(5).mean().rolling(3).mean())
    assert len(seen) == 1 and np.shares_memory(outer.to_numpy(), again.to_numpy())
    assert memo().uncached == before.uncached


def test_unkeyable_arguments_are_computed_every_time_without_a_warning(memo, daily):
    data = prepared(daily)
    close = data.run_frame()["Close"]
    counted, seen = calls_counted(sma)
    before = memo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            compute_indicator(data, lambda arrays, n: counted(arrays["c"], n), ({"c": close * 1.0}, 5), {})
    assert len(seen) == 3 and memo().uncached - before.uncached == 3  # a Series of other values
    # a value that cannot be made read-only is returned, not stored
    for _ in range(2):
        compute_indicator(data, lambda c: {"max": counted(c, 2).max()}, (close,), {})
    assert len(seen) == 5


def test_functions_are_keyed_by_code_closure_and_globals(memo, daily):
    data = prepared(daily)
    close = data.run_frame()["Close"]

    def window(n):
        return lambda c: c.rolling(n).mean()

    five, again, ten = window(5), window(5), window(10)
    first = compute_indicator(data, five, (close,), {})
    assert np.shares_memory(compute_indicator(data, again, (close,), {}).to_numpy(), first.to_numpy())
    assert compute_indicator(data, ten, (close,), {}).iloc[9] == close.iloc[:10].mean()
    # the same name and code reading another global value (a notebook cell run again)
    namespace = {"N": 4}
    exec("def ind(c):\n    return c.rolling(N).mean()", namespace)
    four = compute_indicator(data, namespace["ind"], (close,), {})
    namespace["N"] = 6
    six = compute_indicator(data, namespace["ind"], (close,), {})
    assert four.isna().sum() == 3 and six.isna().sum() == 5
    exec("def ind(c):\n    return c.rolling(N).max()", namespace)  # redefined, same name
    assert compute_indicator(data, namespace["ind"], (close,), {}).iloc[5] == close.iloc[:6].max()


def test_a_lambda_over_self_is_keyed_by_the_strategy(memo, daily):
    counted, seen = calls_counted(sma)

    class Trend(nbb.Strategy):
        n = 10
        other = 1

        def signals(self, data):
            return (data["Close"] > self.I(lambda d: counted(d["Close"], self.n), data)).astype(float)

    nbb.sweep(Trend, daily, {"n": [5, 10], "other": [1, 2]}, progress=False)
    assert len(seen) == 4  # equal strategies share; these four differ in params and seed


def test_outside_a_backtest_i_just_computes(memo):
    class Probe(nbb.Strategy):
        def signals(self, data):
            return self.I(sma, data["Close"], 3)

    before = memo()
    frame = nbb.load_sample("daily")
    pd.testing.assert_series_equal(Probe().signals(frame), frame["Close"].rolling(3).mean())
    assert memo().uncached == before.uncached + 1


def test_i_is_a_reserved_name():
    with pytest.raises(TypeError, match="clash"):
        type("Bad", (nbb.Strategy,), {"I": 3})


# ----------------------------------------------------------------- the data
def test_an_edited_frame_never_returns_a_stale_value(memo, daily):
    frame = daily.copy()
    before = nbb.backtest(SmaCross(), frame)
    frame["Close"] = frame["Close"].to_numpy()[::-1].copy()  # in place, same object
    frame["Open"], frame["High"], frame["Low"] = frame["Close"], frame["Close"], frame["Close"]
    after = nbb.backtest(SmaCross(), frame)
    fresh = nbb.backtest(RollingCross(), frame)  # no memo involved
    assert not before.stats.equals(after.stats)
    pd.testing.assert_series_equal(after.stats, fresh.stats, check_exact=True)
    pd.testing.assert_series_equal(after.equity, fresh.equity, check_exact=True)


def test_a_column_returned_as_it_is_leaves_the_users_frame_writable(memo, daily):
    frame = daily.copy()
    data = prepared(frame)
    got = compute_indicator(data, lambda d: d["Close"], (data.run_frame(),), {})
    assert not got.to_numpy().flags.writeable
    frame.iloc[0, 0] = 1.0  # the user's frame is theirs still


def test_entries_go_with_their_data_and_windows_share_it(memo, daily):
    data = prepared(daily)
    late = data.trading_from(1000)
    close = data.run_frame()["Close"]
    compute_indicator(data, sma, (close, 5), {})
    before = memo()
    compute_indicator(late, sma, (late.run_frame()["Close"], 5), {})
    assert memo().hits == before.hits + 1
    gc.collect()  # the data of earlier tests goes first
    entries = memo().entries
    del data, late, close
    gc.collect()
    assert memo().entries == entries - 1


# ----------------------------------------------------------------- the budget
def test_least_recently_used_entries_go_beyond_the_budget(memo, hourly):
    data = prepared(hourly)
    close = data.run_frame()["Close"]
    size = close.to_numpy().nbytes  # 160,000 bytes an SMA
    set_indicator_memo(1)  # 1 MiB: six SMAs of 20,000 bars
    start = memo()
    for n in range(2, 8):
        compute_indicator(data, sma, (close, n), {})
    compute_indicator(data, sma, (close, 2), {})  # n=2 is now the most recently used
    compute_indicator(data, sma, (close, 8), {})  # ...so n=3 goes
    info = memo()
    assert info.nbytes <= info.budget == 1 << 20 and info.entries == 6
    assert info.evicted - start.evicted == 1 and info.nbytes >= 6 * size
    before = memo()
    compute_indicator(data, sma, (close, 2), {})
    assert memo().hits == before.hits + 1
    compute_indicator(data, sma, (close, 3), {})
    assert memo().misses == before.misses + 1
    set_indicator_memo(0.5)  # a smaller budget evicts at once
    assert memo().nbytes <= 1 << 19 and memo().entries == 3


def test_a_value_larger_than_the_budget_is_not_stored(memo, hourly):
    data = prepared(hourly)
    set_indicator_memo(0.1)
    before = memo()
    compute_indicator(data, sma, (data.run_frame()["Close"], 5), {})
    assert memo().entries == before.entries and memo().nbytes <= 0.1 * (1 << 20)


def test_a_budget_of_zero_turns_the_memo_off(memo, daily):
    set_indicator_memo(0)
    counted, seen = calls_counted(sma)
    data = prepared(daily)
    close = data.run_frame()["Close"]
    before = memo()
    compute_indicator(data, counted, (close, 5), {}), compute_indicator(data, counted, (close, 5), {})
    assert len(seen) == 2 and memo().entries == 0 and memo().uncached == before.uncached + 2


def test_set_indicator_memo_checks_its_argument():
    with pytest.raises(ValueError, match=r"finite number of MiB >= 0 \(0 turns the memo off\), got -1"):
        nbb.set_indicator_memo(-1)
    with pytest.raises(TypeError, match="must be a number of MiB, got str '64'"):
        nbb.set_indicator_memo("64")
    assert nbb.set_indicator_memo is set_indicator_memo


@pytest.mark.parametrize(("value", "budget", "warned"), [("3", 3 << 20, False), ("0", 0, False),
                                                         ("lots", 256 << 20, True)])
def test_the_environment_variable_sets_the_budget(value, budget, warned):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from nbbacktest.engine.indicators import memo_info; print(memo_info().budget)")
    env = {**os.environ, indicators.MEMO_ENV: value}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == budget
    assert ("is not a size in MiB" in out.stderr) is warned


# ------------------------------------------------------- bit for bit, memo or not
@pytest.mark.parametrize("sample", ["daily", "hourly"])
@pytest.mark.parametrize("strategy", [SmaCross(), SmaCross(fast=20, slow=20), SmaCrossEvent(fast=5)])
def test_the_examples_give_the_same_bits_with_and_without_the_memo(memo, sample, strategy):
    frame = nbb.load_sample(sample)
    on = [nbb.backtest(strategy, frame, commission=0.001) for _ in range(2)]
    set_indicator_memo(0)
    off = nbb.backtest(strategy, frame, commission=0.001)
    for result in on:
        pd.testing.assert_series_equal(result.stats, off.stats, check_exact=True)
        pd.testing.assert_series_equal(result.equity, off.equity, check_exact=True)
        pd.testing.assert_frame_equal(result.trades, off.trades, check_exact=True)


def test_smacross_is_the_rolling_crossover_it_was(memo, daily):
    data, settings = prepared(daily), Settings(commission=0.002)
    for fast, slow in [(5, 20), (10, 30), (30, 10), (50, 200)]:
        new = simulate_stats(SmaCross(fast, slow), data, settings, 0)
        old = simulate_stats(RollingCross(fast, slow), data, settings, 0)
        assert new == old or all(a == b or (a != a and b != b) for a, b in zip(new.values(), old.values()))


def test_event_driven_i_warms_up_and_is_made_in_init_only(memo, daily):
    class Late(nbb.Strategy):
        def init(self):
            self.sma = self.I(sma, self.data["Close"], 20)
            self.first = None

        def next(self, bar):
            self.first = bar.i if self.first is None else self.first
            if bar.i == 30:
                self.I(sma, self.data["Close"], 5)

    with pytest.raises(nbb.StrategyError, match=r"I\(\) is computed once: call it in init\(\)"):
        nbb.backtest(Late, daily)
    old = nbb.backtest(SmaCrossEvent(), daily)
    assert old.stats["trades"] == nbb.backtest(SmaCross(), daily).stats["trades"]


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


def test_a_sweep_gives_the_same_table_with_and_without_the_memo(memo, daily):
    where = lambda p: p.fast < p.slow  # noqa: E731
    on = nbb.sweep(SmaCross, daily, GRID, where=where, progress=False, commission=0.001)
    set_indicator_memo(0)
    off = nbb.sweep(SmaCross, daily, GRID, where=where, progress=False, commission=0.001)
    rolling = nbb.sweep(RollingCross, daily, GRID, where=where, progress=False, commission=0.001)
    pd.testing.assert_frame_equal(comparable(on.results), comparable(off.results), check_exact=True)
    pd.testing.assert_frame_equal(comparable(on.results).drop(columns="strategy", errors="ignore"),
                                  comparable(rolling.results).drop(columns="strategy", errors="ignore"),
                                  check_exact=True)


@pytest.mark.cluster
def test_a_cluster_sweep_memoizes_on_each_engine_with_the_same_table(cluster, memo, daily):
    set_indicator_memo(0)
    local = nbb.sweep(SmaCross, daily, GRID, progress=False, commission=0.001)
    view = cluster.client[:]
    before = view.apply_sync(memo_info)
    shared = nbb.sweep(SmaCross, daily, GRID, progress=False, commission=0.001, cluster=cluster)
    after = view.apply_sync(memo_info)
    pd.testing.assert_frame_equal(comparable(local.results), comparable(shared.results), check_exact=True)
    hits, misses, uncached = (sum(getattr(a, name) - getattr(b, name) for a, b in zip(after, before))
                              for name in ("hits", "misses", "uncached"))
    distinct = len(set(GRID["fast"]) | set(GRID["slow"]))
    # Every self.I call is counted once; each engine computes each SMA once at most
    # (its first run may find the columns of its frame unknown: see indicators._Scope).
    on_engines = int(shared.results.engine.isin(cluster.ids).sum())  # the client may run some
    assert hits + misses + uncached == 2 * on_engines
    assert misses <= 2 * distinct and uncached <= 2 * len(cluster.ids) and hits >= on_engines


# -------------------------------------------------------------------- TA-Lib
def test_talib_works_through_i_and_is_memoized(memo, hourly):
    talib = pytest.importorskip("talib")

    class TaCross(nbb.Strategy):
        fast, slow = 10, 30

        def signals(self, data):
            close = data["Close"]
            return (self.I(talib.SMA, close, self.fast) > self.I(talib.SMA, close, self.slow)).astype(float)

    data = prepared(hourly)
    close = data.run_frame()["Close"]
    ta = compute_indicator(data, talib.SMA, (close, 20), {})
    expected = close.rolling(20).mean()
    assert ta.isna().sum() == expected.isna().sum() == 19
    np.testing.assert_allclose(ta.to_numpy()[19:], expected.to_numpy()[19:], rtol=1e-12, atol=0)
    before = memo()
    again = compute_indicator(data, talib.SMA, (data.run_frame()["Close"], 20), {})
    assert memo().hits == before.hits + 1 and np.shares_memory(again.to_numpy(), ta.to_numpy())
    as_array = compute_indicator(data, talib.SMA, (data.close,), {"timeperiod": 20})
    np.testing.assert_array_equal(as_array, ta.to_numpy())
    before = memo()
    sweep = nbb.sweep(TaCross, hourly, {"fast": [5, 10], "slow": [20, 30]}, progress=False)
    assert sweep.results.status.eq("done").all()
    assert memo().misses - before.misses == 4 and memo().hits - before.hits == 4

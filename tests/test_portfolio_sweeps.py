"""Portfolio strategies in sweeps: each point is one portfolio backtest over the whole universe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import DataError, ParamError, SweepError
from nbbacktest.parallel import events as ev
from nbbacktest.parallel.fingerprint import fingerprint

GRID = {"lookback": [20, 60, 120], "long": [0.2, 0.3], "short": [0.0, 0.2], "rebalance": ["M", "W"]}


class Momentum(nbb.PortfolioStrategy):
    lookback = nbb.Param(60, low=2, high=500)

    def scores(self, universe):
        return universe.close.pct_change(self.lookback, fill_method=None)


class EqualWeight(nbb.PortfolioStrategy):
    def weights(self, universe):
        listed = universe.close.notna()
        return listed.div(listed.sum(axis=1), axis=0)


@pytest.fixture(scope="module")
def universe() -> nbb.Universe:
    return nbb.load_universe(nbb.load_sample("universe"))


@pytest.fixture(scope="module")
def local(universe):
    return nbb.sweep(Momentum, universe, GRID, metric="ic_mean", progress=False, commission=0.001)


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["engine", "host", "seconds"], errors="ignore")


def test_a_portfolio_sweep_runs_each_point_once_over_the_universe(local, universe):
    assert len(local) == 24 and local.status == "complete"
    table = local.results
    assert "symbol" not in table.columns or table["symbol"].isna().all()
    for name in ("ic_mean", "ic_ir", "turnover", "long_return_pct", "short_return_pct", "avg_gross_pct"):
        assert name in table.columns and table[name].notna().all()
    assert table["ic_mean"].idxmax() == local.best_index  # metric="ic_mean" ranks by the IC


def test_each_row_equals_its_own_backtest_and_its_detail(local, universe):
    for row in (0, 7, local.best_index):
        params = local.plan.params(row)
        alone = nbb.backtest(Momentum(**params), universe, commission=0.001)
        detail = local.detail(row)
        assert isinstance(detail, nbb.PortfolioResult)
        for name in ("return_pct", "sharpe", "ic_mean", "turnover", "trades"):
            assert local.results.at[row, name] == alone.stats[name] == detail.stats[name]
        assert detail.equity.equals(alone.equity)


def test_the_cluster_gives_the_same_table_and_shares_one_block_per_host(cluster, local, universe):
    parallel = nbb.sweep(Momentum, universe, GRID, metric="ic_mean", progress=False, commission=0.001,
                         cluster=cluster)
    assert parallel.status == "complete"
    pd.testing.assert_frame_equal(comparable(parallel.results), comparable(local.results))
    assert set(parallel.results["engine"].dropna()) <= set(cluster.client.ids)
    key = fingerprint(universe)

    view = cluster.client[:]
    view.execute(
        "import numpy as np\n"
        "from nbbacktest.parallel import worker\n"
        f"held = worker._DATA[{key!r}]\n"
        "base = held.block\n"
        "while base is not None and not isinstance(base, np.memmap):\n"
        "    base = base.base\n"
        "answer = (type(held).__name__, held.block.shape, base is not None, held.block.flags.writeable)\n",
        block=True)
    for answer in view.pull("answer", block=True):
        # the Universe itself, over the host's memory-mapped segment: no engine holds a copy
        assert answer == ("Universe", universe.block.shape, True, False)


def test_run_many_takes_portfolio_instances(universe):
    runs = nbb.run_many([Momentum(lookback=60, rebalance="M"), EqualWeight(rebalance="M")], universe,
                        progress=False)
    assert runs.status == "complete" and len(runs) == 2
    assert runs.results.at[1, "return_pct"] == nbb.backtest(EqualWeight(rebalance="M"), universe).stats[
        "return_pct"]
    assert np.isnan(runs.results.at[1, "ic_mean"])  # weights() has no scores to rank


def test_symbols_picks_part_of_the_universe(universe):
    part = nbb.sweep(Momentum, universe, {"lookback": [20, 60]}, symbols=["AAA", "CCC", "EEE", "GGG"],
                     progress=False)
    expected = nbb.backtest(Momentum(lookback=60), universe.select(["AAA", "CCC", "EEE", "GGG"]))
    assert part.results.at[1, "sharpe"] == expected.stats["sharpe"]
    with pytest.raises(SweepError, match="ZZZ"):
        nbb.sweep(Momentum, universe, {"lookback": [20]}, symbols=["ZZZ"], progress=False)


def test_a_cancelled_checkpoint_resumes_to_the_uninterrupted_table(local, universe, tmp_path):
    seen = []

    def stop_early(event):
        if isinstance(event, ev.PointDone):
            seen.append(event)
            if len(seen) == 5:
                partial.cancel()

    partial = nbb.sweep(Momentum, universe, GRID, metric="ic_mean", progress=False, commission=0.001,
                        save=tmp_path, on_result=stop_early, block=False, chunksize=1)
    partial.wait()
    finished = int((partial.results["status"] == "done").sum())
    assert partial.status == "cancelled" and 5 <= finished < len(partial)
    again = nbb.resume(tmp_path, progress=False)
    assert again.status == "complete"
    pd.testing.assert_frame_equal(comparable(again.results), comparable(local.results))
    assert nbb.load_sweep(tmp_path).results.equals(again.results)


@pytest.mark.parametrize(("grid", "options", "error", "match"), [
    ({"long": [0.6], "short": [0.5]}, {}, ParamError, "long \\+ short = 1.1"),
    ({"gross": [1.5]}, {}, ParamError, "leverage limit"),
    ({"neutral": ["dollar"], "short": [0.0]}, {}, ParamError, "needs both legs"),
    ({"rebalance": ["monthly"]}, {}, ParamError, "rebalance='monthly' is not a rule"),
    ({"lookback": [20]}, {"commission": lambda size, price: 1.0}, SweepError, "callable"),
    ({"lookback": [20]}, {"metric": "ic_men"}, SweepError, "Did you mean: ic_mean"),
])
def test_a_point_that_cannot_run_fails_before_any_engine_sees_it(universe, grid, options, error, match):
    calls = []
    with pytest.raises(error, match=match):
        nbb.sweep(Momentum, universe, grid, progress=False, engines=2,
                  on_result=calls.append, **options)
    assert calls == []  # nothing started


def test_a_rule_that_never_fires_is_named_before_the_sweep(universe):
    short = nbb.load_universe({s: universe[s].iloc[:40] for s in ("AAA", "BBB", "CCC")})
    with pytest.raises(DataError, match="rebalance='Y' never fires"):
        nbb.sweep(Momentum, short, {"rebalance": ["M", "Y"]}, progress=False, engines=2)


def test_portfolio_and_single_instrument_data_mistakes_are_named(universe, daily):
    from nbbacktest.engine.examples import SmaCross

    with pytest.raises(SweepError, match="runs over a universe"):
        nbb.sweep(Momentum, daily, {"lookback": [20]}, progress=False)
    with pytest.raises(SweepError, match="two calls"):
        nbb.run_many([Momentum(), SmaCross()], universe, progress=False)


def test_part_of_a_universe_gives_the_same_bits_on_the_cluster(cluster):
    # A selection of columns is another memory layout: the universe is kept in C order so
    # that the sums across symbols (the benchmark behind beta and alpha) match to the bit.
    equities = nbb.load_sample("equities")
    part = list(equities.symbols[::-1][:40])
    grid = {"lookback": [20, 60], "rebalance": ["M"]}
    local = nbb.sweep(Momentum, equities, grid, symbols=part, progress=False)
    remote = nbb.sweep(Momentum, equities, grid, symbols=part, progress=False, cluster=cluster)
    pd.testing.assert_frame_equal(comparable(remote.results), comparable(local.results), check_exact=True)


def test_the_backtest_magic_sweeps_a_portfolio_strategy_by_its_ic(universe, local):
    from IPython.testing import globalipapp

    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "nbbacktest")
    try:
        shell.user_ns.update(PortfolioMomentum=Momentum, equities_part=universe)
        shell.run_line_magic("backtest", "PortfolioMomentum equities_part --grid lookback=20,60,120 long=0.2"
                             " short=0.2 rebalance=M --metric ic_mean --commission 0.001 -o portfolio_sweep")
        swept = shell.user_ns.pop("portfolio_sweep")
    finally:
        shell.user_ns.pop("PortfolioMomentum", None)
        shell.user_ns.pop("equities_part", None)
        shell.run_line_magic("unload_ext", "nbbacktest")
    assert swept.status == "complete" and len(swept) == 3 and swept.spec.metric == "ic_mean"
    same = local.results[(local.results["long"] == 0.2) & (local.results["short"] == 0.2)
                         & (local.results["rebalance"] == "M")]
    assert sorted(swept.results["ic_mean"]) == sorted(same["ic_mean"])

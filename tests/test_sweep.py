"""Sweeps in-process and on a real 2-engine cluster: same tables to the bit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.errors import ClusterError, SweepError
from nbbacktest.parallel import events as ev
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.segment_files import segment_dir

GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
RUN_ONLY = ["engine", "host", "seconds"]

pytestmark = pytest.mark.timeout(300)


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


def test_in_process_one_engine_and_two_engines_give_identical_tables(cluster, daily):
    where = lambda p: p.fast < p.slow  # noqa: E731
    local = nbb.sweep(SmaCross, daily, GRID, where=where, progress=False, commission=0.001)
    one = nbb.sweep(SmaCross, daily, GRID, where=where, progress=False, commission=0.001,
                    cluster=cluster, engines=1)
    two = nbb.sweep(SmaCross, daily, GRID, where=where, progress=False, commission=0.001,
                    cluster=cluster, chunksize=7)
    assert len(local) == 179 and local.results.status.eq("done").all()
    pd.testing.assert_frame_equal(comparable(local.results), comparable(one.results), check_exact=True)
    pd.testing.assert_frame_equal(comparable(local.results), comparable(two.results), check_exact=True)
    assert set(two.results.engine.dropna()) == set(cluster.ids) | {-1} or len(set(two.results.engine.dropna())) >= 2
    assert local.best == one.best == two.best


def test_engines_of_one_host_share_chunks_with_the_same_results(cluster, daily):
    # No chunksize: the two engines (on this host) take the points of each chunk
    # from one claim file as they go; the table is still in-process's, to the bit.
    local = nbb.sweep(SmaCross, daily, GRID, progress=False)
    shared = nbb.sweep(SmaCross, daily, GRID, progress=False, cluster=cluster)
    pd.testing.assert_frame_equal(comparable(local.results), comparable(shared.results), check_exact=True)
    ran = shared.results.engine.value_counts()
    assert set(ran.index) >= set(cluster.ids)  # both engines took points of the same chunks
    assert {e for e, *_ in shared.chunks} == set(cluster.ids)
    claims = [p for p in os.listdir(segment_dir()) if f"{os.getpid()}-claims-" in p]
    assert claims == []  # the claim file went with the sweep


def test_rows_are_stored_in_grid_order(cluster, daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [20, 5, 10], "slow": [50, 30]}, progress=False,
                      cluster=cluster, chunksize=1)
    assert list(zip(sweep.results.fast, sweep.results.slow)) == [
        (20, 50), (20, 30), (5, 50), (5, 30), (10, 50), (10, 30)
    ]


def test_second_sweep_on_the_same_data_sends_nothing(cluster, daily):
    key = fingerprint(daily)
    nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False, cluster=cluster)
    assert sorted(cluster.holds(key)) == sorted(cluster.ids)
    # the same content in a new object is recognised by its fingerprint
    assert cluster.share(daily.copy(), key) == 0
    status = cluster.status()
    assert status["engines"] == 2 and key in status["data"]


def test_detail_reruns_a_row_locally_with_the_same_result(cluster, daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10], "slow": [30, 60]}, progress=False,
                      cluster=cluster, commission=0.002)
    row = sweep.results.iloc[2]
    result = sweep.detail(2)
    assert result.strategy == SmaCross(10, 30)
    assert result.stats["sharpe"] == row.sharpe and result.stats["trades"] == row.trades
    # Every stat the row keeps (in columns, the data's times once per symbol) is the run's own.
    kept, stats = sweep.row(2), result.stats.to_dict()
    assert {name: kept[name] for name in stats} == stats
    assert list(stats) == [name for name in kept if name in stats]
    with pytest.raises(IndexError, match="from 0 to 3"):
        sweep.detail(4)


@pytest.mark.parametrize("metric, maximize", [("sharpe", True), ("trades", False),
                                              ("max_drawdown_pct", True)])
def test_best_is_the_first_row_with_the_best_metric(daily, metric, maximize):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20], "slow": [30, 60, 90]}, progress=False,
                      metric=metric, maximize=maximize)
    column = sweep.results[metric]
    best = column.idxmax() if maximize else column.idxmin()
    assert sweep.best_index == best and sweep.best_value == column[best]
    assert sweep.best == SmaCross(**sweep.results.loc[best, ["fast", "slow"]].astype(int))


class FailsAtFive(SmaCross):
    def signals(self, data):
        if self.fast == 5:
            raise ValueError("fast=5 is not allowed")
        return super().signals(data)


def test_a_failed_run_has_no_metric_value_even_for_trades(daily):
    # A failed run keeps 0 in the trades column; as a metric it must be NaN, never the best.
    events = []
    sweep = nbb.sweep(FailsAtFive, daily, {"fast": [5, 10, 20], "slow": [60]}, progress=False,
                      metric="trades", maximize=False, on_result=events.append)
    assert sweep.results.status.tolist() == ["failed", "done", "done"]
    assert sweep.best_index in (1, 2) and sweep.best_value == sweep.results.trades[1:].min()
    assert [e.value for e in events if isinstance(e, ev.PointDone)] == \
        sweep.results.trades[1:].tolist()


def test_universe_runs_every_point_on_every_symbol(cluster, small_universe):
    sweep = nbb.sweep(SmaCross, small_universe, {"fast": [5, 10]}, progress=False, cluster=cluster)
    assert len(sweep) == 6
    assert list(sweep.results.symbol) == ["AAA", "BBB", "CCC"] * 2
    some = nbb.sweep(SmaCross, small_universe, {"fast": [5]}, symbols=["CCC"], progress=False,
                     cluster=cluster)
    assert list(some.results.symbol) == ["CCC"]
    assert some.results.sharpe.iloc[0] == sweep.results.sharpe.iloc[2]


class Breakout(nbb.Strategy):
    lookback = 20

    def init(self):
        self.high = self.indicator(lambda d: d["High"].rolling(self.lookback).max())

    def next(self, bar):
        if bar.close >= self.high[bar.i - 1] and not self.position:
            self.buy()
        elif self.position and bar.i % 10 == 0:
            self.close()


def test_run_many_takes_instances_of_any_classes(cluster, daily):
    runs = nbb.run_many([SmaCross(10, 30), Breakout(20), SmaCross(5, 50)], daily,
                        progress=False, cluster=cluster)
    table = runs.results
    assert list(table.strategy) == ["SmaCross", "Breakout", "SmaCross"]
    assert table.status.eq("done").all()
    local = nbb.backtest(Breakout(20), daily)
    assert local.stats["trades"] > 5
    assert table.sharpe.iloc[1] == local.stats["sharpe"]
    assert table.trades.iloc[1] == local.stats["trades"]


def test_events_count_points_and_finish(cluster, daily):
    seen: list[ev.SweepEvent] = []
    sweep = nbb.sweep(SmaCross, daily, {"fast": range(5, 30, 5)}, progress=False, cluster=cluster,
                      on_result=seen.append)
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "Started" and kinds[-1] == "Finished"
    assert kinds.count("PointDone") == len(sweep) == 5
    assert seen[-1].status == "complete"


def test_non_blocking_sweep_is_a_future(cluster, daily):
    sweep = nbb.sweep(SmaCross, daily, GRID, progress=False, cluster=cluster, block=False)
    table = sweep.result(timeout=120)
    assert sweep.done() and len(table) == len(GRID["fast"]) * len(GRID["slow"])
    assert sweep.progress == len(sweep)
    assert not sweep.cancel()  # already finished


def test_strategy_defined_in_main_runs_on_the_engines(cluster):
    url_file = cluster.connection_file
    script = textwrap.dedent(f"""
        import nbbacktest as nbb
        class Inline(nbb.Strategy):
            n = 5
            def signals(self, data):
                return (data["Close"] > data["Close"].rolling(self.n).mean()).astype(float)
        c = nbb.Cluster.connect(url_file={url_file!r})
        s = nbb.sweep(Inline, nbb.load_sample("daily"), {{"n": [5, 10, 20]}}, cluster=c, progress=False)
        print(list(s.results.status), sorted(set(s.results.engine.dropna())))
        c.stop()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "['done', 'done', 'done']" in out.stdout
    assert cluster.client.ids  # the connected client's stop() did not stop our cluster


def test_bad_inputs_fail_before_anything_is_sent(cluster, daily):
    with pytest.raises(SweepError, match="engines must be a positive int"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, engines=0)
    with pytest.raises(SweepError, match="engines must be a positive int"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, engines=-2)
    with pytest.raises(SweepError, match="metric 'sharp' is not a numeric stat. Did you mean: sharpe?"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, metric="sharp")
    with pytest.raises(nbb.UnknownParamError, match="Did you mean: fast"):
        nbb.sweep(SmaCross, daily, {"fsat": [5]})
    with pytest.raises(nbb.ParamError, match="'fast' must be >= 2, got 1"):
        nbb.sweep(SmaCross, daily, {"fast": [1, 5]})
    with pytest.raises(SweepError, match="filtered out all"):
        nbb.sweep(SmaCross, daily, GRID, where=lambda p: p.fast > 1000)
    with pytest.raises(SweepError, match="symbols= selects symbols of a universe"):
        nbb.sweep(SmaCross, daily, symbols=["AAA"])
    with pytest.raises(SweepError, match=r"symbols \['ZZZ'\] are not in the data"):
        nbb.sweep(SmaCross, nbb.load_sample("universe"), symbols=["ZZZ"])
    with pytest.raises(nbb.DataError, match="missing"):
        nbb.sweep(SmaCross, daily.drop(columns="Open"), {"fast": [5]})
    with pytest.raises(SweepError, match="chunksize must be a positive int or 'auto'"):
        nbb.sweep(SmaCross, daily, chunksize=0)
    with pytest.raises(TypeError, match="cluster must be an nbbacktest.Cluster"):
        nbb.sweep(SmaCross, daily, cluster="local")
    with pytest.raises(ClusterError, match="engines=5 but the cluster has 2"):
        nbb.sweep(SmaCross, daily, cluster=cluster, engines=5, progress=False)


def test_resolve_engine_count():
    assert resolve_engine_count(-1) == os.cpu_count()
    assert 1 <= resolve_engine_count("auto") <= os.cpu_count()
    assert resolve_engine_count("auto", data_bytes=10**15) == 1
    with pytest.raises(SweepError, match="got 'many'"):
        resolve_engine_count("many")


def test_connect_to_nothing_says_so():
    with pytest.raises(ClusterError, match="no cluster to connect to"):
        Cluster.connect(url_file="/nonexistent/ipcontroller-client.json", timeout=2)


def test_stop_leaves_no_process_and_no_segment(daily):
    own = Cluster(engines=2, timeout=120)
    try:
        sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20]}, cluster=own, progress=False)
        assert sweep.results.status.eq("done").all()
        pids = list(own.pids.values()) + own.process_ids()
        segments = own.segment_paths()
        assert len(pids) >= 3 and segments and all(os.path.exists(p) for p in segments)
    finally:
        own.stop()
    assert not [p for p in pids if _alive(p)]
    assert not [p for p in segments if os.path.exists(p)]
    assert Cluster.current() is not own
    with pytest.raises(ClusterError, match="stopped"):
        nbb.sweep(SmaCross, daily, cluster=own, progress=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_second_client_disconnecting_leaves_the_first_clients_data(cluster, daily):
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, cluster=cluster, progress=False)
    key = fingerprint(daily)
    assert sorted(cluster.holds(key)) == sorted(cluster.ids)
    other = Cluster.connect(url_file=cluster.connection_file)
    try:
        assert other.status()["engines"] == 2  # asks the engines what they hold
    finally:
        other.stop()
    Cluster._current = cluster
    from nbbacktest.parallel import worker

    infos = cluster.client[:].apply_async(worker.engine_info).get(timeout=30)
    assert all(key in info["data"] for info in infos)


def test_run_many_names_an_unknown_setting(daily):
    with pytest.raises(TypeError, match="run_many got an unknown option 'comission'; the simulation "
                                        "settings are cash, commission, slippage"):
        nbb.run_many([SmaCross(10, 30)], daily, comission=0.002, progress=False)

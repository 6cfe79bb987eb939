"""nbbacktest.parallel.cluster_runner: targets, bit-equal rows, the chunks record, the cost memory."""

from __future__ import annotations

import datetime as dt
import socket
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.metrics import STAT_NAMES
from nbbacktest.errors import ClusterError
from nbbacktest.parallel import cluster_runner, worker
from nbbacktest.parallel.cluster_runner import SHARE_GROUP, ClusterRunner
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult, SweepWriter

pytestmark = pytest.mark.timeout(120)

GRID = {"fast": [5, 10, 15, 20, 25, 30], "slow": [40, 80, 120]}


def offline_runner(engines, fixed=None, host="here", registration=None):
    """A runner over a stand-in cluster: enough for what needs no engine."""
    client = SimpleNamespace(_config={} if registration is None else {"registration": registration})
    cluster = SimpleNamespace(client=client, host=host)
    result = SweepResult(SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings()), pd.DataFrame())
    runner = ClusterRunner(SweepWriter(result), cluster, None, "key", b"", fixed)
    runner.engines = list(engines)
    return runner


# ------------------------------------------------------------------ targets
def test_engines_of_this_host_share_chunks_in_groups_of_share_group():
    assert SHARE_GROUP == 8
    runner = offline_runner(range(12))
    hosts = {**{e: "here" for e in range(10)}, 10: "far", 11: "far"}
    assert runner.targets(hosts) == {0: list(range(8)), 8: [8, 9], 10: [10], 11: [11]}


def test_groups_follow_share_group(monkeypatch):
    monkeypatch.setattr(cluster_runner, "SHARE_GROUP", 3)
    runner = offline_runner([4, 5, 6, 7, 9])
    assert runner.targets(dict.fromkeys(range(10), "here")) == {4: [4, 5, 6], 7: [7, 9]}


@pytest.mark.parametrize("case", ["fixed chunksize", "one engine here", "no flock"])
def test_engines_run_chunks_of_their_own(case, monkeypatch):
    engines, fixed = [1, 2, 3], None
    hosts = {1: "here", 2: "here", 3: "far"}
    if case == "fixed chunksize":
        fixed = 5
    elif case == "one engine here":
        hosts[2] = "far"
    else:
        monkeypatch.setattr(worker, "claims_supported", lambda: False)
    assert offline_runner(engines, fixed).targets(hosts) == {1: [1], 2: [2], 3: [3]}


@pytest.mark.cluster
def test_the_engines_of_the_session_cluster_are_one_target(cluster):
    runner = offline_runner(cluster.ids, host=cluster.host)
    hosts = cluster.refresh_hosts(cluster.ids)
    assert set(hosts.values()) == {cluster.host}
    assert runner.targets(hosts) == {min(cluster.ids): sorted(cluster.ids)}


# ------------------------------------------------------------------ the controller probe
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the block ends: nothing listens there


def test_a_controller_on_a_closed_port_does_not_answer():
    runner = offline_runner([0], registration=f"tcp://127.0.0.1:{closed_port()}")
    assert runner._controller_answers() is False
    assert runner._controller_url().startswith("tcp://127.0.0.1:")


def test_a_listening_or_unknown_controller_counts_as_answering():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert offline_runner([0], registration=f"tcp://127.0.0.1:{port}")._controller_answers() is True
    assert offline_runner([0], registration="ipc:///tmp/controller")._controller_answers() is True
    assert offline_runner([0], registration="tcp://127.0.0.1:port")._controller_answers() is True
    assert offline_runner([0])._controller_answers() is True


@pytest.mark.cluster
def test_the_session_clusters_controller_answers(cluster):
    runner = ClusterRunner(SweepWriter(SweepResult(SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings()),
                                                   pd.DataFrame())), cluster, None, "k", b"", None)
    assert runner._controller_url().startswith("tcp://") and runner._controller_answers() is True


# ------------------------------------------------------------------ sweeps on the cluster
@pytest.mark.cluster
def test_a_cluster_sweep_equals_the_in_process_sweep_to_the_bit(cluster, daily):
    local = nbb.sweep(SmaCross, daily, GRID, progress=False, commission=0.0007)
    for options in ({"chunksize": 2}, {}):
        on_cluster = nbb.sweep(SmaCross, daily, GRID, progress=False, commission=0.0007, cluster=cluster,
                               **options)
        assert on_cluster.status == "complete" and on_cluster.engines == len(cluster.ids)
        columns = ["fast", "slow", *STAT_NAMES, "status"]
        pd.testing.assert_frame_equal(on_cluster.results[columns], local.results[columns], check_exact=True)
        assert on_cluster.best == local.best and on_cluster.best_value == local.best_value
        ran = set(on_cluster.results.engine.dropna())
        assert ran <= set(cluster.ids) and ran


@pytest.mark.cluster
def test_the_chunks_record_says_what_ran_where_and_when(cluster, daily):
    sweep = nbb.sweep(SmaCross, daily, GRID, progress=False, cluster=cluster, chunksize=4,
                      slippage=0.0003)
    table = sweep.results
    assert sweep.chunks
    assert sum(points for _, points, *_ in sweep.chunks) == table.engine.notna().sum()
    for engine, points, sent, received, started, completed in sweep.chunks:
        assert engine in cluster.ids and 1 <= points <= 4
        assert sent <= received
        assert isinstance(started, dt.datetime) and started <= completed
    by_engine = table.engine.value_counts().to_dict()
    for engine in by_engine:
        assert by_engine[engine] == sum(p for e, p, *_ in sweep.chunks if e == engine)


@pytest.mark.cluster
def test_a_second_sweep_of_the_same_job_reuses_the_measured_cost(cluster, daily):
    settings = {"commission": 0.000123}  # a job no other test runs
    first = nbb.sweep(SmaCross, daily, GRID, progress=False, cluster=cluster, **settings)
    # Its first point was measured here (no engine), then its cost was remembered.
    assert pd.isna(first.results.engine[0]) and first.results.engine[1:].notna().all()
    key = first.spec.cost_key(fingerprint(daily))
    timing = cluster_runner._TIMINGS[cluster]
    remembered = timing.point_seconds[key]
    assert remembered > 0
    assert set(timing.round_trips) <= set(cluster.ids)
    second = nbb.sweep(SmaCross, daily, {"fast": [6, 7, 8], "slow": [50]}, progress=False, cluster=cluster,
                       **settings)
    assert second.results.engine.notna().all()  # nothing measured here: every point on an engine
    assert second.status == "complete"
    # Another job (other settings) is measured afresh.
    other = nbb.sweep(SmaCross, daily, {"fast": [6, 7]}, progress=False, cluster=cluster, commission=0.000124)
    assert pd.isna(other.results.engine[0])


@pytest.mark.cluster
def test_more_engines_wanted_than_registered_is_refused_naming_both(cluster, daily):
    spec = SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings())
    runner = ClusterRunner(SweepWriter(SweepResult(spec, daily)), cluster, len(cluster.ids) + 3,
                           fingerprint(daily), b"", None)
    with pytest.raises(ClusterError, match=rf"engines={len(cluster.ids) + 3} but the cluster has"
                                           rf" {len(cluster.ids)} engine\(s\) registered"):
        runner.prepare()



def test_engines_drop_what_a_sweep_derived_when_it_ends(cluster, daily):
    sweep = nbb.sweep(SmaCross, daily, grid=GRID, cluster=cluster, progress=False)
    assert sweep.results["engine"].nunique() == len(cluster.client.ids)  # every engine ran points
    # On each engine: prepared data still holding arrays derived from it, and scratch rows.
    view = cluster.client[:]
    view.execute("from nbbacktest.engine import caches as _caches\n"
                 "from nbbacktest.parallel import worker as _worker\n"
                 "_derived = (sum('market' in vars(d) for d in _worker._PREPARED.values()),"
                 " 'row' in vars(_caches._SCRATCH))", block=True)
    assert view.pull("_derived", block=True) == [(0, False)] * len(cluster.client.ids)

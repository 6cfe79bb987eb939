"""Sweeps that survive: failing points, cancel, checkpoints, dead and new engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.errors import SweepError
from nbbacktest.parallel import events as ev
from nbbacktest.parallel import worker
from nbbacktest.parallel.checkpoint import ERRORS, ROWS, read_rows
from nbbacktest.parallel.cluster import Cluster

pytestmark = pytest.mark.timeout(300)
RUN_ONLY = ["engine", "host", "seconds"]
GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


class Picky(nbb.Strategy):
    """Raises on fast == 15: a bug that only some points hit."""

    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)

    def signals(self, data):
        if self.fast == 15:
            raise ValueError(f"no good with fast={self.fast}")
        close = data["Close"]
        return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)


class Sleepy(nbb.Strategy):
    """Each run sleeps ``pause`` seconds first: long enough to cancel or kill mid-sweep."""

    fast = nbb.Param(10, low=2, high=400)
    pause = 0.02

    def signals(self, data):
        time.sleep(self.pause)
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


# ------------------------------------------------------------------ failing points
@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_failing_points_carry_the_error_and_every_other_point_completes(where, cluster, daily):
    options = {"cluster": cluster} if where == "cluster" else {}
    sweep = nbb.sweep(Picky, daily, {"fast": [5, 10, 15, 20], "slow": [40, 60]}, progress=False,
                      **options)
    table = sweep.results
    bad = table["fast"] == 15
    assert table.loc[bad, "status"].eq("failed").all() and bad.sum() == 2
    assert table.loc[bad, "error"].eq("ValueError: no good with fast=15").all()
    assert table.loc[bad, "traceback"].str.contains("raise ValueError(f\"no good", regex=False).all()
    assert table.loc[~bad, "status"].eq("done").all() and table.loc[~bad, "sharpe"].notna().all()
    assert sweep.status == "complete" and sweep.failed == 2


@pytest.mark.parametrize("where", ["in-process", "cluster", "cluster, shared chunks"])
def test_stop_on_error_stops_at_the_first_failure_and_names_it(where, cluster, daily):
    options = {"in-process": {}, "cluster": {"cluster": cluster, "chunksize": 1},
               "cluster, shared chunks": {"cluster": cluster}}[where]
    events = []
    sweep = nbb.sweep(Picky, daily, {"fast": [5, 10, 15, 20, 25, 30], "slow": range(40, 200, 10)},
                      stop_on_error=True, progress=False, on_result=events.append, **options)
    assert sweep.status == "stopped"
    first = sweep.results.index[sweep.results.status.eq("failed")][0]
    assert f"row {first} (fast=15, slow=" in sweep.reason
    assert "raised ValueError: no good with fast=15" in sweep.reason
    assert sweep.results.status.eq("cancelled").sum() > 0
    finished = [e for e in events if isinstance(e, ev.Finished)]
    assert finished[0].status == "stopped" and finished[0].reason == sweep.reason
    assert "stopped at the first failure" in repr(sweep)


def test_a_late_interrupt_on_the_engines_release_still_ends_the_stopped_sweep(cluster, daily,
                                                                             monkeypatch):
    # A cancel's SIGINT can reach an engine after its task, while it releases its working
    # memory; that sweep once hung for ever (its thread died before it finished the result).
    here = os.getpid()

    def interrupted_on_an_engine(collect=False, client=here):
        import os

        if os.getpid() != client:
            raise KeyboardInterrupt  # what the late SIGINT raises there

    # The client sends the function itself (ipyparallel sends functions by value).
    monkeypatch.setattr(worker, "release_working_memory", interrupted_on_an_engine)
    sweep = nbb.sweep(Picky, daily, {"fast": [5, 10, 15, 20], "slow": range(40, 200, 10)},
                      cluster=cluster, stop_on_error=True, progress=False, block=False)
    assert sweep.wait(timeout=60), "the stopped sweep never finished"
    assert sweep.status == "stopped" and "fast=15" in sweep.reason


def test_errors_are_appended_to_errors_log(tmp_path, daily):
    sweep = nbb.sweep(Picky, daily, {"fast": [10, 15], "slow": [40, 60]}, save=tmp_path,
                      progress=False)
    log = (tmp_path / ERRORS).read_text()
    assert log.count("--- row ") == 2 and "(fast=15, slow=40)" in log and "(fast=15, slow=60)" in log
    assert "ValueError: no good with fast=15" in log and 'raise ValueError(f"no good' in log
    assert sweep.failed == 2


# ------------------------------------------------------------------ checkpoints
def test_resume_skips_saved_runs_and_equals_an_uninterrupted_run(tmp_path, daily):
    whole = nbb.sweep(SmaCross, daily, GRID, where="fast < slow", progress=False)
    first = nbb.sweep(SmaCross, daily, GRID, where="fast < slow", save=tmp_path, progress=False)
    lines = (tmp_path / ROWS).read_bytes().splitlines(keepends=True)
    assert len(lines) == len(whole) == 179
    # Keep 60 rows and half of the 61st, as a client killed mid-write would.
    (tmp_path / ROWS).write_bytes(b"".join(lines[:60]) + lines[60][: len(lines[60]) // 2])
    assert len(read_rows(tmp_path)) == 60
    events = []
    again = nbb.sweep(SmaCross, daily, GRID, where="fast < slow", save=tmp_path, resume=True,
                      progress=False, on_result=events.append)
    started = events[0]
    assert isinstance(started, ev.Started) and started.finished == 60
    assert sum(isinstance(e, ev.PointDone) for e in events) == 179 - 60
    pd.testing.assert_frame_equal(comparable(again.results), comparable(whole.results))
    pd.testing.assert_frame_equal(comparable(first.results), comparable(whole.results))
    assert again.best == whole.best
    # The half line was cut off before appending: every line parses, each row once.
    rows = [json.loads(line)["row"] for line in (tmp_path / ROWS).read_bytes().splitlines()]
    assert sorted(rows) == list(range(179))


def test_resume_from_the_directory_alone_on_a_cluster(tmp_path, cluster, daily):
    whole = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20], "slow": [40, 80]}, progress=False)
    nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20], "slow": [40, 80]}, save=tmp_path, progress=False)
    lines = (tmp_path / ROWS).read_bytes().splitlines(keepends=True)
    (tmp_path / ROWS).write_bytes(b"".join(lines[:2]))
    again = nbb.resume(tmp_path, cluster=cluster, progress=False)
    pd.testing.assert_frame_equal(comparable(again.results), comparable(whole.results))
    assert again.results.engine.iloc[2:].notna().any()


def test_checkpoint_misuse_is_a_clear_error(tmp_path, daily):
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path, progress=False)
    with pytest.raises(SweepError, match=r"already holds a checkpoint \(2 of 2 runs saved\).*resume=True"):
        nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path, progress=False)
    with pytest.raises(SweepError, match="the strategy, grid or settings differ"):
        nbb.sweep(SmaCross, daily, {"fast": [5, 20]}, save=tmp_path, resume=True, progress=False)
    with pytest.raises(SweepError, match="the data differ"):
        nbb.sweep(SmaCross, daily.iloc[:-1], {"fast": [5, 10]}, save=tmp_path, resume=True,
                  progress=False)
    with pytest.raises(SweepError, match="resume=True needs save=DIR"):
        nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, resume=True, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="is a file, not a directory"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, save=tmp_path / "file", progress=False)
    with pytest.raises(TypeError, match="save must be a directory path, got int"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, save=3, progress=False)
    with pytest.raises(SweepError, match="holds no checkpoint"):
        nbb.resume(tmp_path / "nowhere", progress=False)
    with pytest.raises(TypeError, match="resume must be True or False"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, save=tmp_path, resume="yes", progress=False)


def test_client_killed_mid_sweep_resumes_in_a_new_process(tmp_path):
    folder = tmp_path / "run"
    script = textwrap.dedent(f"""
        import time, nbbacktest as nbb
        class Slow(nbb.Strategy):
            n = 5
            def signals(self, data):
                time.sleep(0.01)
                return (data["Close"] > data["Close"].rolling(self.n).mean()).astype(float)
        data = nbb.load_sample("daily").iloc[:400]
        nbb.sweep(Slow, data, {{"n": range(2, 302)}}, save={str(folder)!r}, progress=False)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(read_rows(folder)) < 40:
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
    saved = len(read_rows(folder))
    assert 40 <= saved < 300
    resumed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import nbbacktest as nbb
            events = []
            sweep = nbb.resume({str(folder)!r}, progress=False, on_result=events.append)
            print(sweep.status, events[0].finished, sweep.results.status.eq("done").sum())
            sweep.results.drop(columns=["engine", "host", "seconds"]).to_pickle({str(tmp_path / "resumed.pkl")!r})
        """)],
        capture_output=True, text=True, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    status, restored, done = resumed.stdout.split()
    assert (status, int(restored), int(done)) == ("complete", saved, 300)
    # The same class, run without interruption here, gives the same table.
    namespace: dict = {}
    exec(script.split("data = ")[0], namespace)  # defines Slow as the child did
    whole = nbb.sweep(namespace["Slow"], nbb.load_sample("daily").iloc[:400], {"n": range(2, 302)},
                      progress=False)
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "resumed.pkl"), comparable(whole.results),
                                  check_dtype=True)


# ------------------------------------------------------------------ cancel
def test_cancel_keeps_finished_rows_and_the_next_sweep_works(cluster, daily):
    events = []
    sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 102), "pause": [0.3]}, cluster=cluster,
                      progress=False, block=False, on_result=events.append, chunksize=4)
    deadline = time.monotonic() + 60
    while sweep.progress < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = time.monotonic()
    assert sweep.cancel()
    sweep.result(timeout=30)
    stopped = time.monotonic() - asked
    table = sweep.results
    assert sweep.status == "cancelled" and stopped < 10
    assert set(table.status) == {"done", "cancelled"}
    assert table.status.eq("done").sum() == sweep.progress >= 4
    # Running points were interrupted: far fewer than the 100 x 0.3 s were run.
    assert table.status.eq("cancelled").sum() > 50
    assert any(isinstance(e, ev.Cancelled) for e in events)
    # The engines are idle again and the next sweep on the same cluster works.
    assert _engines_idle(cluster, timeout=5)
    after = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, cluster=cluster, progress=False)
    assert after.status == "complete" and after.results.status.eq("done").all()


def test_ctrl_c_in_the_blocking_call_cancels_and_returns_the_rows(cluster, daily):
    def interrupt():
        time.sleep(1.0)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 102), "pause": [0.2]}, cluster=cluster,
                      progress=False, chunksize=2)
    assert time.monotonic() - started < 15
    assert sweep.status == "cancelled" and 0 < sweep.progress < 100
    assert sweep.results.status.isin(["done", "cancelled"]).all()
    assert _engines_idle(cluster, timeout=5)


def test_cancelling_one_sweep_leaves_another_on_the_same_cluster_complete(cluster, daily):
    # The cancel interrupts the engines, and so the points the other sweep runs there:
    # those must go out again, not stay pending under a "complete" status.
    first = nbb.sweep(Sleepy, daily, {"fast": range(2, 202), "pause": [0.02]}, cluster=cluster,
                      progress=False, block=False, chunksize=4)
    second = nbb.sweep(Sleepy, daily, {"fast": range(2, 122), "pause": [0.02]}, cluster=cluster,
                       progress=False, block=False, chunksize=4)
    deadline = time.monotonic() + 60
    while second.progress < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.cancel()
    first.result(timeout=60)
    second.result(timeout=120)
    assert first.status == "cancelled"
    assert second.status == "complete" and second.results.status.eq("done").all()
    assert second.progress == len(second) == 120


class Exiting(nbb.Strategy):
    """Calls sys.exit for fast == 7: one point must not take the sweep (or the caller) down."""

    fast = nbb.Param(10, low=2, high=100)

    def signals(self, data):
        if self.fast == 7:
            sys.exit(3)
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_a_point_calling_sys_exit_is_a_failed_row(where, cluster, daily):
    options = {"cluster": cluster} if where == "cluster" else {}
    sweep = nbb.sweep(Exiting, daily, {"fast": [5, 6, 7, 8]}, progress=False, **options)
    table = sweep.results
    assert sweep.status == "complete"
    assert table.status.tolist() == ["done", "done", "failed", "done"]
    assert table.error.iloc[2] == "SystemExit: 3"
    assert "sys.exit(3)" in table.traceback.iloc[2]


class Dropper(nbb.Strategy):
    """At fast == 20, makes its engine let go of every dataset it holds (once per engine)."""

    fast = nbb.Param(10, low=2, high=400)

    def signals(self, data):
        from nbbacktest.parallel import worker as engine_worker

        if self.fast == 20 and not getattr(engine_worker, "dropped_once", False):
            engine_worker.dropped_once = True
            engine_worker.release_data(list(engine_worker._DATA))
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


def test_an_engine_that_lets_the_data_go_mid_sweep_gets_it_again(daily):
    previous = Cluster.current()
    own = Cluster(engines=2, timeout=120)
    try:
        sweep = nbb.sweep(Dropper, daily, {"fast": range(2, 102)}, cluster=own, progress=False,
                          chunksize=10)
        worker.dropped_once = True  # in this process, the same points without the drop
        try:
            whole = nbb.sweep(Dropper, daily, {"fast": range(2, 102)}, progress=False)
        finally:
            del worker.dropped_once
        assert sweep.status == "complete" and sweep.results.status.eq("done").all()
        pd.testing.assert_frame_equal(comparable(sweep.results), comparable(whole.results))
    finally:
        own.stop()
        Cluster._current = previous


def _engines_idle(cluster: Cluster, timeout: float) -> bool:
    """Every engine answers a trivial task within ``timeout``: none is still running points."""
    try:
        cluster.client[:].apply_async(os.getpid).get(timeout=timeout)
    except Exception as error:
        print("engines still busy:", type(error).__name__, cluster.client.queue_status())
        return False
    return True


# ------------------------------------------------------------------ engines come and go
@pytest.fixture(scope="module")
def spare():
    """A cluster of its own, whose engines these tests kill and add."""
    previous = Cluster.current()
    own = Cluster(engines=2, timeout=120)
    yield own
    own.stop()
    Cluster._current = previous


def _killer_of_an_engine(cluster: Cluster, after: int) -> tuple[int, list, Any]:
    """The engine to kill, the events seen, and an ``on_result`` that kills it (SIGKILL)
    once ``after`` points are done."""
    events: list = []
    victim = max(cluster.client.ids)
    pid = cluster.pids[victim] if victim in cluster.pids else cluster.client[victim].apply_sync(os.getpid)

    def kill_after_some(event):
        events.append(event)
        if isinstance(event, ev.PointDone) and sum(isinstance(e, ev.PointDone) for e in events) == after:
            os.kill(pid, signal.SIGKILL)

    return victim, events, kill_after_some


@pytest.mark.parametrize("chunksize", [5, "auto"], ids=["own chunks", "shared chunks"])
def test_engine_killed_mid_sweep_loses_no_row(spare, daily, chunksize):
    # With chunksize="auto" both engines claim points from the same chunks: the points
    # the killed one had claimed and not returned run again, on the engine left.
    _wait_for_engines(spare, 2)
    whole = nbb.sweep(Sleepy, daily, {"fast": range(2, 202)}, progress=False)
    victim, events, kill_after_some = _killer_of_an_engine(spare, after=30)

    sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 202)}, cluster=spare, progress=False,
                      on_result=kill_after_some, chunksize=chunksize)
    assert sweep.status == "complete"
    lost = [e for e in events if isinstance(e, ev.EngineLost)]
    assert [e.engine for e in lost] == [victim]
    assert lost[0].requeued > 0  # shared chunks too: what it had not run goes elsewhere
    assert lost[0].replaced  # a cluster nbbacktest started gets a new engine
    _wait_for_engines(spare, 2)
    table = sweep.results
    assert len(table) == 200 and table.status.eq("done").all()
    pd.testing.assert_frame_equal(comparable(table), comparable(whole.results))
    assert sum(isinstance(e, ev.PointDone) for e in events) == 200  # none reported twice
    # The cluster stays usable.
    after = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20]}, cluster=spare, progress=False)
    assert after.status == "complete" and victim not in set(after.results.engine.dropna())


class SleepyMomentum(nbb.PortfolioStrategy):
    """A portfolio point slow enough that an engine can be killed with points left."""

    lookback = nbb.Param(20, low=2, high=400)

    def scores(self, universe):
        time.sleep(0.02)
        return universe.close.pct_change(self.lookback, fill_method=None)


def test_engine_killed_mid_portfolio_sweep_loses_no_row(spare):
    # A portfolio point runs over the whole universe, shared once per host as one block.
    _wait_for_engines(spare, 2)
    universe = nbb.load_universe(nbb.load_sample("universe"))
    grid = {"lookback": range(5, 125)}
    whole = nbb.sweep(SleepyMomentum, universe, grid, progress=False)
    victim, events, kill_after_some = _killer_of_an_engine(spare, after=20)

    sweep = nbb.sweep(SleepyMomentum, universe, grid, cluster=spare, progress=False, on_result=kill_after_some)
    assert sweep.status == "complete"
    lost = [e for e in events if isinstance(e, ev.EngineLost)]
    assert [e.engine for e in lost] == [victim] and lost[0].requeued > 0
    table = sweep.results
    assert len(table) == 120 and table.status.eq("done").all()
    pd.testing.assert_frame_equal(comparable(table), comparable(whole.results))
    assert sum(isinstance(e, ev.PointDone) for e in events) == 120  # none reported twice
    _wait_for_engines(spare, 2)


def _wait_for_engines(cluster: Cluster, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(cluster.client.ids) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(cluster.client.ids) >= n, f"{len(cluster.client.ids)} engines, not {n}"


class Poison(nbb.Strategy):
    """Kills the process it runs in for fast == 13 (as a segfault or the OOM killer would)."""

    fast = nbb.Param(10, low=2, high=400)

    def signals(self, data):
        if self.fast == 13:
            os._exit(1)
        time.sleep(0.01)
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


@pytest.mark.parametrize("chunksize", [5, "auto"], ids=["own chunks", "shared chunks"])
def test_a_point_that_kills_its_engine_twice_is_a_failed_row_and_the_sweep_goes_on(
        spare, daily, chunksize):
    _wait_for_engines(spare, 2)
    events = []
    sweep = nbb.sweep(Poison, daily, {"fast": range(2, 62)}, cluster=spare, progress=False,
                      on_result=events.append, chunksize=chunksize)
    table = sweep.results
    assert sweep.status == "complete"
    poisoned = table.fast == 13
    assert table.loc[poisoned, "status"].tolist() == ["failed"]
    assert table.loc[poisoned, "error"].iloc[0].startswith("EngineKilled: killed its engine 2 times")
    assert table.loc[~poisoned, "status"].eq("done").all()
    lost = [e for e in events if isinstance(e, ev.EngineLost)]
    assert len(lost) == 2 and all(e.replaced for e in lost)
    assert any(isinstance(e, ev.EngineAdded) for e in events)  # a replacement took work
    whole = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, cluster=spare, progress=False)
    assert whole.status == "complete"
    _wait_for_engines(spare, 2)


def test_engines_that_join_mid_sweep_get_the_data_and_take_points(spare, daily):
    before = set(spare.client.ids)
    events = []
    # 10 s of points on 2 engines: longer than an engine takes to start and register.
    sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 202), "pause": [0.1]}, cluster=spare,
                      progress=False, on_result=events.append, block=False, chunksize=3)
    assert spare.start_engines(1)
    sweep.result(timeout=120)
    added = [e.engine for e in events if isinstance(e, ev.EngineAdded)]
    assert len(added) == 1 and added[0] not in before
    table = sweep.results
    assert table.status.eq("done").all()
    assert (table.engine == added[0]).sum() > 0
    assert sum(isinstance(e, ev.PointDone) for e in events) == 200


def test_engine_that_leaves_cleanly_hands_nothing_back_twice(spare, daily):
    events = []
    leaving = max(spare.client.ids)
    sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 202)}, cluster=spare, progress=False,
                      on_result=events.append, block=False, chunksize=4)
    deadline = time.monotonic() + 60
    while sweep.progress < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    spare.client.shutdown(targets=[leaving], block=False)
    sweep.result(timeout=120)
    table = sweep.results
    assert table.status.eq("done").all()
    done_events = [e.index for e in events if isinstance(e, ev.PointDone)]
    assert sorted(done_events) == list(range(200))
    assert any(isinstance(e, ev.EngineLost) and e.engine == leaving for e in events)


def test_a_sweep_that_loses_every_engine_raises_and_keeps_its_rows(daily):
    previous = Cluster.current()
    own = Cluster(engines=1, timeout=120)
    # Connected to, so no engine is started in place of the one lost.
    connected = Cluster.connect(url_file=own.connection_file, timeout=60)
    try:
        pid = own.client[own.client.ids[0]].apply_sync(os.getpid)

        def kill_after_some(event):
            if isinstance(event, ev.PointDone) and event.index == 20:
                os.kill(pid, signal.SIGKILL)

        with pytest.raises(nbb.SweepFailedError, match=r"every engine of the sweep was lost; \d+ of "
                           r"200 rows finished and are kept: error.result holds them") as raised:
            nbb.sweep(Sleepy, daily, {"fast": range(2, 202)}, cluster=connected, progress=False,
                      on_result=kill_after_some, chunksize=5)
        kept = raised.value.result
        assert kept.status == "failed" and "every engine" in kept.reason
        assert kept.progress >= 20 and kept.results.status.eq("done").sum() == kept.progress
        assert isinstance(raised.value.__cause__, nbb.ClusterError)
    finally:
        connected.stop()
        own.stop()
        Cluster._current = previous


class Stubborn(nbb.Strategy):
    """fast == 9 runs ``hold`` seconds and swallows every interrupt (a bare except)."""

    fast = nbb.Param(10, low=2, high=400)
    hold = 0.0

    def signals(self, data):
        end = time.monotonic() + (self.hold if self.fast == 9 else 0.0)
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except BaseException:  # noqa: B036 - the user's bug this test is about
                pass
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


def _cancel_with_a_stubborn_point(cluster: Cluster, daily) -> float:
    sweep = nbb.sweep(Stubborn, daily, {"fast": range(5, 45), "hold": [25.0]}, cluster=cluster,
                      progress=False, block=False, chunksize=1)
    deadline = time.monotonic() + 60
    while sweep.progress < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = time.monotonic()
    sweep.cancel()
    sweep.result(timeout=60)
    assert sweep.status == "cancelled"
    return time.monotonic() - asked


def test_a_point_that_ignores_the_interrupt_does_not_hold_up_later_sweeps(spare, daily):
    _wait_for_engines(spare, 2)
    # Connected to: the stuck engine is left out of the next sweep until its point ends.
    connected = Cluster.connect(url_file=spare.connection_file, engines=2, timeout=60)
    try:
        assert _cancel_with_a_stubborn_point(connected, daily) < 15
        started = time.monotonic()
        with pytest.warns(nbb.NbbacktestWarning, match=r"engine\(s\) \d+ still run a point of a"
                          " cancelled sweep that ignored the interrupt: this sweep runs without them"
                          ) as warned:
            after = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20]}, cluster=connected,
                              progress=False)
        assert after.status == "complete" and time.monotonic() - started < 15
        stuck = int(str(warned[0].message).split()[1])
        assert stuck not in set(after.results.engine.dropna())
    finally:
        connected.stop()
    assert _engines_idle(spare, timeout=60)  # the stubborn point has ended
    # Started by nbbacktest: the stuck engine is killed and replaced.
    before = {spare.pids[e] for e in spare.client.ids}
    assert _cancel_with_a_stubborn_point(spare, daily) < 15
    after = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 20]}, cluster=spare, progress=False)
    assert after.status == "complete"
    _wait_for_engines(spare, 2)
    assert len(before - {spare.pids[e] for e in spare.client.ids}) == 1  # one replaced
    assert _engines_idle(spare, timeout=10)


def test_a_sweep_whose_controller_dies_fails_soon_and_keeps_its_rows(daily):
    from nbbacktest.parallel.cluster_runner import CONTROLLER_CHECK

    previous = Cluster.current()
    own = Cluster(engines=2, timeout=120)
    try:
        import psutil

        # The controller and its schedulers (processes of their own in ipyparallel 9).
        hub = psutil.Process(own._ipp_cluster.controller.pid)
        controller = [hub, *hub.children(recursive=True)]
        sweep = nbb.sweep(Sleepy, daily, {"fast": range(2, 202), "pause": [0.05]}, cluster=own,
                          progress=False, block=False, chunksize=2)
        deadline = time.monotonic() + 60
        while sweep.progress < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        for process in controller:
            process.kill()
        killed = time.monotonic()
        assert sweep.wait(timeout=CONTROLLER_CHECK + 20)
        assert time.monotonic() - killed < CONTROLLER_CHECK + 20
        assert sweep.status == "failed"
        assert "the cluster's controller stopped answering" in sweep.reason
        table = sweep.results
        assert table.status.eq("done").sum() == sweep.progress >= 20
        assert isinstance(sweep.exception(), nbb.ClusterError)
    finally:
        own.stop()
        Cluster._current = previous


# ------------------------------------------------------------------ long runs
@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_a_point_running_past_warn_after_is_named(where, cluster, daily):
    options = {"cluster": cluster, "chunksize": 1} if where == "cluster" else {}
    events = []
    nbb.sweep(Sleepy, daily, {"fast": [5, 6], "pause": [0.0, 1.0]}, warn_after=0.3,
              progress=False, on_result=events.append, **options)
    slow = [e for e in events if isinstance(e, ev.PointSlow)]
    assert sorted(e.index for e in slow) == [1, 3]
    assert slow[0].params == {"fast": slow[0].params["fast"], "pause": 1.0}
    assert 0.3 <= slow[0].seconds < 1.0
    if where == "cluster":
        assert {e.engine for e in slow} <= set(cluster.client.ids)
    with pytest.raises(SweepError, match="warn_after must be a positive number"):
        nbb.sweep(Sleepy, daily, {"fast": [5]}, warn_after=0, progress=False)


# ------------------------------------------------------------------ clusters started elsewhere
def test_connect_by_profile_to_ipcluster_whose_engines_are_on_another_host(tmp_path, monkeypatch, daily):
    """`ipcluster start -n 2 --profile X`; its engines report the host "farhost", so
    they take the other-host path: one engine there receives the data and writes that
    host's copy (in its own segment directory), the other attaches it."""
    far_shm = tmp_path / "farhost-shm"
    far_shm.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    env = dict(os.environ, NBBACKTEST_HOSTNAME="farhost", NBBACKTEST_SHM_DIR=str(far_shm))
    ipcluster = os.path.join(os.path.dirname(sys.executable), "ipcluster")
    started = subprocess.Popen([ipcluster, "start", "-n", "2", "--profile=farlab", "--log-level=WARN"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    previous = Cluster.current()
    try:
        deadline = time.monotonic() + 60
        url_file = tmp_path / "ipython" / "profile_farlab" / "security" / "ipcontroller-client.json"
        while not url_file.exists() and time.monotonic() < deadline:
            assert started.poll() is None, started.stderr.read().decode()
            time.sleep(0.2)
        connected = Cluster.connect(profile="farlab", engines=2, timeout=60)
        sweep = nbb.sweep(SmaCross, daily, GRID, where="fast < slow", cluster=connected, progress=False)
        whole = nbb.sweep(SmaCross, daily, GRID, where="fast < slow", progress=False)
        pd.testing.assert_frame_equal(comparable(sweep.results), comparable(whole.results))
        assert set(sweep.results.host) == {"farhost", os.uname().nodename} and \
            sweep.results.host.eq("farhost").sum() > 100
        status = connected.status()
        assert status["kind"] == "connected" and status["hosts"] == {"farhost": 2}
        assert list(far_shm.iterdir()) and len(list(far_shm.iterdir())) == 1  # one copy for the host
        assert not connected.segment_paths()  # nothing written on the client's host
        assert list(status["data"].values())[0]["engines"] == 2
        connected.stop()  # disconnects, and the engines drop the host's copy
        assert not list(far_shm.iterdir())
        import ipyparallel as ipp

        still = ipp.Client(profile="farlab", timeout=30)
        try:
            still.wait_for_engines(2, timeout=30)
            assert len(still.ids) == 2  # the cluster started elsewhere keeps running
        finally:
            still.close()
    finally:
        subprocess.run([ipcluster, "stop", "--profile=farlab"], env=env, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            started.wait(timeout=30)
        except subprocess.TimeoutExpired:
            started.kill()
        Cluster._current = previous

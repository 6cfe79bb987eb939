"""nbbacktest.parallel.runners: the in-process runner, its chunks, cancel, stop_on_error and crashes."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.parallel import events as ev
from nbbacktest.parallel import worker
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.runners import HERE, Interrupter, LocalRunner
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult, SweepWriter

pytestmark = pytest.mark.timeout(120)

GRID = {"fast": [5, 10, 15, 20, 25], "slow": [40, 80]}


class Picky(SmaCross):
    """Raises on fast == 15."""

    def signals(self, data):
        if self.fast == 15:
            raise ValueError(f"no good with fast={self.fast}")
        return super().signals(data)


class Spinning(nbb.Strategy):
    """Computes for ``spin`` seconds in Python first: a point only cancel can stop."""

    fast = nbb.Param(10, low=2, high=100)
    spin = 0.0

    def signals(self, data):
        end = time.monotonic() + self.spin
        while time.monotonic() < end:
            pass
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


class Crashing(LocalRunner):
    """A runner that fails once its first chunks are recorded: what a runner's bug does."""

    def specs(self, rows):
        if rows and rows[0] >= 2:
            raise RuntimeError("the planner lost its place")
        return super().specs(rows)


def local(data, strategy=SmaCross, grid=GRID, fixed=None, runner=LocalRunner, **options):
    """A sweep's result, writer and runner, prepared and not run."""
    result = SweepResult(SweepSpec(plan_sweep(strategy, grid), Settings(), **options), data)
    made = runner(SweepWriter(result), fixed)
    made.prepare()
    return result, made


@pytest.fixture
def chunks(monkeypatch):
    """The rows of every chunk run_points is given, in order."""
    seen: list[list[int]] = []
    real = worker.run_points

    def recording(job_key, job, points, shared=None):
        seen.append([row for row, *_ in points])
        return real(job_key, job, points, shared)

    monkeypatch.setattr(worker, "run_points", recording)
    return seen


# ------------------------------------------------------------------ chunks
def test_the_first_point_runs_alone_then_fixed_chunks(daily, chunks):
    result, runner = local(daily, fixed=3)
    runner.run()
    assert chunks == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert result.status == "complete" and result.results.status.eq("done").all()


def test_auto_chunks_are_sized_from_the_first_point(daily, chunks):
    grid = {"fast": range(5, 45), "slow": [60, 90]}
    result, runner = local(daily, grid=grid)
    runner.run()
    assert chunks[0] == [0]
    assert sorted(row for chunk in chunks for row in chunk) == list(range(80))  # each row once
    assert len(chunks) < 20  # points of milliseconds go in chunks of many
    assert max(len(chunk) for chunk in chunks[1:]) > 1
    assert result.status == "complete"


def test_the_in_process_runner_equals_the_sweep(daily):
    result, runner = local(daily, fixed=4)
    runner.run()
    again = nbb.sweep(SmaCross, daily, GRID, progress=False)
    columns = ["engine", "host", "seconds"]
    pd.testing.assert_frame_equal(result.results.drop(columns=columns), again.results.drop(columns=columns),
                                  check_exact=True)
    assert result.results.engine.isna().all() and HERE == -1  # in process: no engine
    assert result.results.host.eq(worker.host_name()).all()


def test_only_pending_rows_run_and_the_data_is_released(daily, chunks):
    result, runner = local(daily, fixed=2)
    done = nbb.sweep(SmaCross, daily, GRID, progress=False)
    SweepWriter(result).restore([done.store.saved(r) for r in (0, 1, 5)])
    chunks.clear()
    runner.run()
    assert sorted(row for chunk in chunks for row in chunk) == [2, 3, 4, 6, 7, 8, 9]
    assert chunks[0] == [2]
    assert runner.data_key not in worker._DATA and runner.key not in worker._WATCH
    pd.testing.assert_frame_equal(result.results.drop(columns=["seconds"]),
                                  done.results.drop(columns=["seconds"]))


class EndingBadly(LocalRunner):
    """A runner that raises after its points, before it finishes the sweep."""

    def finish(self, crash=None):
        if crash is None:
            raise RuntimeError("lost while cleaning up")
        super().finish(crash)


def test_a_failure_after_the_points_and_before_finish_still_ends_the_sweep(daily):
    result, runner = local(daily, fixed=4, runner=EndingBadly)
    runner.drive()
    assert result.done(), "wait() and result() would block for ever"
    assert result.status == "failed" and result.reason == "RuntimeError: lost while cleaning up"
    assert result.results.status.eq("done").all()


def test_started_says_in_process(daily):
    seen = []
    result = SweepResult(SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings()), daily)
    result.events.subscribe(seen.append)
    runner = LocalRunner(SweepWriter(result), None)
    runner.prepare()
    assert isinstance(seen[0], ev.Started) and seen[0].engines == 0 and seen[0].total == 1
    assert result.engines == 0
    runner.run()
    assert [type(e).__name__ for e in seen] == ["Started", "PointDone", "Finished"]


# ------------------------------------------------------------------ cancel
def test_in_process_cancel_interrupts_the_running_point(daily):
    sweep = nbb.sweep(Spinning, daily, {"fast": [5, 6, 7], "spin": [0.0, 30.0]}, progress=False,
                      block=False)
    deadline = time.monotonic() + 30
    while sweep.progress < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the 30-s point is running now
    asked = time.monotonic()
    assert sweep.cancel()
    assert sweep.wait(timeout=10)
    assert time.monotonic() - asked < 5  # not the 30 s the point would take
    assert sweep.status == "cancelled"
    assert sweep.results.status.iloc[0] == "done" and "done" in set(sweep.results.status)
    assert sweep.results.status.isin(["done", "cancelled"]).all()
    # The next in-process sweep is not disturbed by the interrupt.
    after = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=False)
    assert after.status == "complete"


def test_cancel_from_another_thread_stops_a_runner_driven_in_its_thread(daily):
    result, runner = local(daily, strategy=Spinning, grid={"fast": [5, 6], "spin": [0.0, 30.0]}, fixed=1)
    thread = threading.Thread(target=runner.drive, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while result.progress < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # row 1 spins now
    asked = time.monotonic()
    assert result.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - asked < 5
    assert result.done() and result.status == "cancelled"
    assert result.results.status.tolist() == ["done", "cancelled", "cancelled", "cancelled"]
    assert runner.data_key not in worker._DATA
    assert not result.cancel()  # finished


def test_interrupter_raises_in_its_thread_only_while_armed():
    state: dict[str, object] = {}
    ready, unarmed_done = threading.Event(), threading.Event()

    def target():
        interrupter = state["interrupter"] = Interrupter(threading.get_ident())
        ready.set()
        time.sleep(0.05)
        try:  # not armed: the main thread's interrupt() below raises nothing here
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
        except KeyboardInterrupt:
            state["unarmed"] = "interrupted"
        unarmed_done.set()
        try:
            with interrupter.armed():
                end = time.monotonic() + 20
                while time.monotonic() < end:
                    pass
            state["armed"] = "ran to the end"
        except KeyboardInterrupt:
            state["armed"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    interrupter = state["interrupter"]
    interrupter.interrupt()
    assert unarmed_done.wait(10)
    deadline = time.monotonic() + 10
    while not interrupter._armed and time.monotonic() < deadline:  # the thread is in the block
        time.sleep(0.01)
    asked = time.monotonic()
    interrupter.interrupt()
    interrupter.interrupt()  # one interrupt per arming: the second is nothing
    thread.join(timeout=10)
    assert "unarmed" not in state
    assert isinstance(state["armed"], float) and state["armed"] - asked < 5
    assert not interrupter._armed


# ------------------------------------------------------------------ errors
def test_a_failing_point_is_a_row_and_the_sweep_goes_on(daily):
    result, runner = local(daily, strategy=Picky, fixed=3)
    runner.run()
    assert result.status == "complete" and result.failed == 2
    table = result.results
    assert table.status.tolist() == ["done"] * 4 + ["failed"] * 2 + ["done"] * 4
    assert table.error[4] == "ValueError: no good with fast=15"


def test_stop_on_error_stops_and_names_the_row(daily, chunks):
    result, runner = local(daily, strategy=Picky, stop_on_error=True)
    runner.run()
    assert result.status == "stopped"
    assert result.reason == ("stopped at the first failure: row 4 (fast=15, slow=40) raised ValueError:"
                             " no good with fast=15")
    table = result.results
    assert table.status.tolist() == ["done"] * 4 + ["failed"] + ["cancelled"] * 5
    assert 4 in chunks[-1]  # the chunk stopped at the failure, and no chunk followed


def test_a_runner_crash_fails_the_sweep_and_keeps_its_rows(daily):
    seen = []
    result, runner = local(daily, fixed=1, runner=Crashing)
    result.events.subscribe(seen.append)
    runner.drive()  # the sweep's thread: the crash is the sweep's, not drive's
    assert result.done() and result.status == "failed"
    assert result.reason == "RuntimeError: the planner lost its place"
    assert isinstance(result.exception(), RuntimeError)
    assert result.results.status.tolist() == ["done", "done"] + ["cancelled"] * 8
    assert isinstance(seen[-1], ev.Finished) and seen[-1].status == "failed"
    assert runner.data_key not in worker._DATA and runner.key not in worker._WATCH

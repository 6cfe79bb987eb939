"""nbbacktest.parallel.worker: what runs on an engine (and in-process), tested in this process."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict

import cloudpickle
import numpy as np
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine import caches as caches_module
from nbbacktest.engine.backtest import Settings
from nbbacktest.errors import StrategyError
from nbbacktest.parallel import events as ev
from nbbacktest.parallel import worker
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.rows import NAT, StatSchema
from nbbacktest.parallel.segment_layout import layout_of
from nbbacktest.parallel.shared import Segment
from nbbacktest.parallel.worker import ClaimBoard, Job

pytestmark = pytest.mark.timeout(120)

SCHEMA = StatSchema.current()


class Picky(SmaCross):
    """Raises on fast == 15."""

    def signals(self, data):
        if self.fast == 15:
            raise ValueError(f"no good with fast={self.fast}")
        return super().signals(data)


class Exiting(SmaCross):
    """Calls sys.exit for fast == 7."""

    def signals(self, data):
        if self.fast == 7:
            sys.exit(3)
        return super().signals(data)


class Interrupting(SmaCross):
    """Raises KeyboardInterrupt for fast == 9, as a cancel's SIGINT does mid-point."""

    def signals(self, data):
        if self.fast == 9:
            raise KeyboardInterrupt
        return super().signals(data)


class Sleepy(nbb.Strategy):
    """Each run sleeps ``pause`` seconds first."""

    fast = nbb.Param(10, low=2, high=400)
    pause = 0.02

    def signals(self, data):
        time.sleep(self.pause)
        close = data["Close"]
        return (close > close.rolling(self.fast).mean()).astype(float)


@pytest.fixture
def caches(monkeypatch):
    """Empty engine caches for the test: what it holds never meets another test's."""
    monkeypatch.setattr(worker, "_DATA", {})
    monkeypatch.setattr(worker, "_HELD", {})
    monkeypatch.setattr(worker, "_WRITTEN", {})
    monkeypatch.setattr(worker, "_PREPARED", {})
    monkeypatch.setattr(worker, "_JOBS", OrderedDict())


@pytest.fixture
def segments(daily):
    """Tiny shared-memory segments of distinct data, attached by the test: (key, segment) pairs."""
    made = []
    for k in range(5):
        frame = daily.iloc[: 40 + k]
        key = f"worker-test-{k}-{fingerprint(frame)}"
        made.append((key, Segment.create(frame, key)))
    yield made
    for _, segment in made:
        segment.unlink()


def attach(key, segment, client="c1"):
    return worker.attach_data(key, str(segment.path), segment.layout, client)


# ------------------------------------------------------------------ data
def test_held_data_is_kept_as_is_and_released(caches, daily):
    worker.hold_data("local", daily)
    worker.hold_data("local", daily.iloc[:5])  # held already: the first stays
    assert worker._DATA["local"] is daily
    assert worker.lease_data("local") and not worker.lease_data("absent")
    assert worker.prepared("local", None) is worker.prepared("local", None)  # built once
    assert worker.release_data(["local", "absent"]) == ["local"]
    assert "local" not in worker._DATA and worker._PREPARED == {}
    assert worker.release_data(["local"]) == []


def test_runs_on_attached_data_read_its_columns_without_a_copy(caches, segments):
    # Columns joined into a new array would stay on the engine as long as the data
    # (about 0.8 of the data's bytes, twice).
    key, segment = segments[0]
    attach(key, segment)
    frame = worker._DATA[key]
    # One read-only block over the segment: frame.values is a view too, so a write raises.
    assert np.shares_memory(frame.values, frame["Close"].to_numpy()) and not frame.values.flags.writeable
    worker.register_job("copies", Job((SmaCross,), (("fast", "slow"),), Settings(), key))
    rows, _ = worker.run_points("copies", None, [(0, 0, (5, 10), None)])
    assert rows.errors == {}
    data = worker.prepared(key, None)
    for name in ("Open", "High", "Low", "Close"):
        assert np.shares_memory(getattr(data, name.lower()), frame[name].to_numpy()), name
        assert np.shares_memory(data.run_frame()[name].to_numpy(), frame[name].to_numpy()), name


def test_chunks_of_a_sweep_reuse_what_they_derived_and_its_end_drops_it(caches, daily):
    worker.hold_data("local", daily)
    worker.register_job("kept", Job((SmaCross,), (("fast", "slow"),), Settings(), "local"))
    first, _ = worker.run_points("kept", None, [(0, 0, (5, 20), None), (1, 0, (10, 40), None)])
    data = worker.prepared("local", None)
    # Between two chunks of a sweep, the next one reuses the buy & hold returns and scratch.
    market = data.market
    worker.run_points("kept", None, [(2, 0, (15, 60), None)])
    assert data.market is market and "row" in vars(caches_module._SCRATCH)
    # The sweep's end: no array of the data's length is kept.
    worker.release_working_memory()
    assert "market" not in vars(data) and "volume" not in vars(data)
    assert "row" not in vars(caches_module._SCRATCH)
    # Asked again, they come back equal: the next sweep's stats do not change.
    again, _ = worker.run_points("kept", None, [(0, 0, (5, 20), None)])
    assert again.floats[0].tolist() == first.floats[0].tolist()


def test_the_heap_keeps_a_runs_freed_arrays_for_the_next_run_until_released():
    # glibc's adaptive thresholds follow the largest block freed: after 1 MiB blocks, a
    # free top of the heap over 2 MiB goes back at once, so a run freeing 8 MiB of
    # temporaries hands them back and the next run faults them in again. Once set, they
    # stay in the heap for the next run, until release_freed_memory (a fresh process).
    code = textwrap.dedent("""
        import ctypes, numpy as np
        from nbbacktest.parallel import worker
        libc = ctypes.CDLL("libc.so.6")
        class Info(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                "fordblks", "keepcost")]
        libc.mallinfo2.restype = Info
        def free_after_a_run():
            blocks = [np.ones(2**17) for _ in range(8)]  # a run's temporaries: 8 x 1 MiB
            del blocks
            return libc.mallinfo2().fordblks
        for _ in range(2):
            np.ones(2**17)  # glibc's thresholds now follow 1 MiB blocks
        before = free_after_a_run()
        assert worker.keep_freed_memory_in_sweeps()
        free_after_a_run()
        after = free_after_a_run()
        worker.release_freed_memory()
        print(before < 2**22, after >= 2**23, libc.mallinfo2().fordblks < 2**22)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True"] * 3, out.stdout + out.stderr


def test_attached_data_reads_as_the_frame_and_goes_when_released(caches, segments, daily):
    key, segment = segments[0]
    assert attach(key, segment) == worker.host_name()
    assert worker._DATA[key].equals(daily.iloc[:40])
    assert worker._HELD[key].nbytes == segment.nbytes and "c1" in worker._HELD[key].leases
    assert key in worker.engine_info()["data"]
    assert worker.release_data() == [key]  # None: everything
    assert worker._DATA == {} and worker._HELD == {}


def test_data_another_client_leases_stays_when_one_releases_it(caches, segments):
    key, segment = segments[0]
    attach(key, segment, "a")
    attach(key, segment, "b")
    assert set(worker._HELD[key].leases) == {"a", "b"}
    assert worker.release_data([key], client="a") == []
    assert key in worker._DATA and set(worker._HELD[key].leases) == {"b"}
    assert worker.release_data([key], client="b") == [key]
    assert key not in worker._DATA


def test_a_lapsed_lease_drops_the_data(caches, segments, monkeypatch):
    monkeypatch.setattr(worker, "LEASE_SECONDS", 0.1)
    (old, old_segment), (new, new_segment) = segments[:2]
    attach(old, old_segment)
    time.sleep(0.15)
    attach(new, new_segment)  # every lease call looks for lapsed data
    assert old not in worker._DATA and new in worker._DATA
    assert not worker.lease_data(old)


def test_reading_data_renews_its_leases(caches, segments, monkeypatch):
    monkeypatch.setattr(worker, "LEASE_SECONDS", 0.3)
    key, segment = segments[0]
    attach(key, segment)
    for _ in range(4):  # 0.4 s of use, longer than the lease
        time.sleep(0.1)
        worker.prepared(key, None)
    assert worker.lease_data("other") is False and key in worker._DATA


def test_idle_data_beyond_idle_kept_goes_least_recently_used_first(caches, segments, monkeypatch):
    monkeypatch.setattr(worker, "IN_USE_SECONDS", 0.0)
    monkeypatch.setattr(worker, "IDLE_KEPT", 2)
    keys = [key for key, _ in segments]
    for key, segment in segments[:4]:
        attach(key, segment)
        time.sleep(0.01)
    assert sorted(worker._DATA) == sorted(keys[2:4])
    worker.prepared(keys[2], None)  # read: now the most recently used
    time.sleep(0.01)
    attach(*segments[4])
    assert sorted(worker._DATA) == sorted([keys[2], keys[4]])


def test_idle_data_beyond_idle_bytes_goes(caches, segments, monkeypatch):
    monkeypatch.setattr(worker, "IN_USE_SECONDS", 0.0)
    size = max(segment.nbytes for _, segment in segments)
    monkeypatch.setattr(worker, "IDLE_BYTES", 2 * size)
    for key, segment in segments[:4]:
        attach(key, segment)
        time.sleep(0.01)
    assert sorted(worker._DATA) == sorted(key for key, _ in segments[2:4])
    monkeypatch.setattr(worker, "IDLE_BYTES", 0)
    worker.lease_data(segments[3][0], "c1")
    assert worker._DATA == {}  # no idle data fits in a budget of 0 bytes


def test_data_in_use_is_never_dropped_for_the_budget(caches, segments, monkeypatch):
    monkeypatch.setattr(worker, "IDLE_KEPT", 0)
    monkeypatch.setattr(worker, "IDLE_BYTES", 0)
    for key, segment in segments[:3]:
        attach(key, segment)
    assert len(worker._DATA) == 3  # shared within IN_USE_SECONDS: a running sweep's


def test_received_data_is_written_once_and_its_file_removed_with_it(caches, daily, tmp_path):
    layout, arrays = layout_of(daily.iloc[:30])
    path = tmp_path / "segment"
    assert worker.receive_data("r", str(path), layout, *arrays, client="c") == worker.host_name()
    assert path.exists() and worker._DATA["r"].equals(daily.iloc[:30])
    worker.receive_data("r", str(path), layout, *arrays, client="d")  # held: only a lease
    assert set(worker._HELD["r"].leases) == {"c", "d"}
    assert worker.release_data(["r"]) == ["r"]
    assert not path.exists()


# ------------------------------------------------------------------ jobs
def job_of(*classes, **options) -> Job:
    return Job(classes, tuple(tuple(c._params) for c in classes), Settings(), "data", **options)


def test_register_job_keeps_the_last_jobs_kept(caches, monkeypatch):
    monkeypatch.setattr(worker, "_JOBS_KEPT", 2)
    jobs = [job_of(SmaCross, warn_after=float(k + 1)) for k in range(3)]
    for k, job in enumerate(jobs):
        assert worker.register_job(f"j{k}", job) is job
    assert list(worker._JOBS) == ["j1", "j2"]  # the oldest went
    # A key already cached keeps its job; bytes are a cloudpickled Job.
    assert worker.register_job("j2", jobs[0]) is jobs[2]
    loaded = worker.register_job("j3", cloudpickle.dumps(jobs[0]))
    assert isinstance(loaded, Job) and loaded.warn_after == 1.0 and list(worker._JOBS) == ["j2", "j3"]


def test_a_job_in_use_is_kept_over_newer_ones(caches, monkeypatch, daily):
    """A long sweep's job stays cached while other sweeps register theirs on the engine."""
    monkeypatch.setattr(worker, "_JOBS_KEPT", 2)
    worker.hold_data("data", daily)
    worker.register_job("long", job_of(SmaCross))
    worker.register_job("other", job_of(SmaCross))
    rows, _ = worker.run_points("long", None, [(0, 0, (10, 30), None)])  # the long sweep's next task
    worker.register_job("newest", job_of(SmaCross))
    assert list(worker._JOBS) == ["long", "newest"] and len(rows.rows) == 1
    worker.release_data(["data"])


# ------------------------------------------------------------------ run_points
@pytest.fixture
def held(caches, daily):
    worker.hold_data("data", daily)
    return daily


def test_run_points_gives_the_simulators_stats(held):
    job = worker.register_job("smacross", job_of(SmaCross))
    rows, interrupted = worker.run_points("smacross", None, [(3, 0, (5, 30), None), (1, 0, (20, 60), None)])
    assert not interrupted and rows.rows.tolist() == [3, 1] and rows.errors == {}
    for k, (fast, slow) in enumerate([(5, 30), (20, 60)]):
        stats = nbb.backtest(SmaCross(fast, slow), held).stats
        assert rows.floats[k].tolist() == [stats[n] for n in job.schema.floats]
        assert rows.ints[k].tolist() == [stats["trades"], *(stats[n].value for n in job.schema.durations)]
    assert (rows.seconds > 0).all()
    assert rows.per_data == {None: (held.index[0], held.index[-1], held.index[-1] - held.index[0])}


def test_a_failing_point_is_a_row_with_the_users_traceback(held):
    worker.register_job("mixed", job_of(SmaCross, Picky, Exiting))
    points = [(0, 1, (15, 30), None), (1, 0, (15, 30), None), (2, 2, (7, 30), None), (3, 2, (8, 30), None)]
    rows, interrupted = worker.run_points("mixed", None, points)
    assert not interrupted and rows.rows.tolist() == [0, 1, 2, 3]
    assert set(rows.errors) == {0, 2}
    etype, message, text = rows.errors[0]
    assert (etype, message) == ("ValueError", "no good with fast=15")
    assert 'raise ValueError(f"no good with fast={self.fast}")' in text and "test_worker.py" in text
    assert rows.errors[2][:2] == ("SystemExit", "3") and "sys.exit(3)" in rows.errors[2][2]
    assert rows.ints[0].tolist() == [0] + [NAT] * (rows.ints.shape[1] - 1) and rows.ints[1, 0] > 0


def test_stop_on_error_ends_the_chunk_at_the_failure(held):
    worker.register_job("stop", job_of(Picky, stop_on_error=True))
    points = [(r, 0, (fast, 40), None) for r, fast in enumerate([5, 15, 20])]
    rows, interrupted = worker.run_points("stop", None, points)
    assert interrupted and rows.rows.tolist() == [0, 1] and list(rows.errors) == [1]


def test_an_interrupt_keeps_the_rows_finished_before_it(held):
    worker.register_job("int", job_of(Interrupting))
    points = [(r, 0, (fast, 40), None) for r, fast in enumerate([5, 9, 20])]
    rows, interrupted = worker.run_points("int", None, points)
    assert interrupted and rows.rows.tolist() == [0] and rows.errors == {}


def test_a_job_sent_as_bytes_is_registered_and_an_unknown_one_is_a_key_error(held):
    rows, _ = worker.run_points("sent", cloudpickle.dumps(job_of(SmaCross)), [(0, 0, (5, 30), None)])
    assert rows.rows.tolist() == [0] and "sent" in worker._JOBS
    with pytest.raises(KeyError):
        worker.run_points("never-sent", None, [(0, 0, (5, 30), None)])


def test_engines_sharing_a_window_run_each_point_once(held, tmp_path):
    path = str(tmp_path / "claims")
    ClaimBoard.create(path)
    worker.register_job("shared", job_of(SmaCross))
    points = [(r, 0, (5 + r, 40), None) for r in range(6)]
    first, _ = worker.run_points("shared", None, points, (path, 0, 2))
    second, _ = worker.run_points("shared", None, points, (path, 0, 2))
    assert first.rows.tolist() == list(range(6)) and second.rows.tolist() == []
    other, _ = worker.run_points("shared", None, points[:2], (path, 1, 2))  # another window
    assert other.rows.tolist() == [0, 1]


def test_stop_on_error_closes_a_shared_window(held, tmp_path):
    path = str(tmp_path / "claims")
    ClaimBoard.create(path)
    worker.register_job("shared-stop", job_of(Picky, stop_on_error=True))
    points = [(r, 0, (fast, 40), None) for r, fast in enumerate([5, 15, 20, 25])]
    first, interrupted = worker.run_points("shared-stop", None, points, (path, 0, 2))
    assert interrupted and first.rows.tolist() == [0, 1]
    second, _ = worker.run_points("shared-stop", None, points, (path, 0, 2))
    assert second.rows.tolist() == []  # the other engine stops too


# ------------------------------------------------------------------ describe_error
def test_describe_error_of_a_strategy_error_is_its_cause():
    try:
        try:
            raise ValueError("the user's bug")
        except ValueError as error:
            raise StrategyError("SmaCross(fast=5).signals raised") from error
    except StrategyError as wrapped:
        etype, message, text = worker.describe_error(wrapped)
    assert (etype, message) == ("ValueError", "the user's bug")
    assert text.startswith("Traceback") and text.endswith("ValueError: the user's bug\n")
    assert "StrategyError" not in text
    assert worker.describe_error(StrategyError("alone"))[:2] == ("StrategyError", "alone")
    assert worker.describe_error(KeyError("k"))[:2] == ("KeyError", "'k'")


# ------------------------------------------------------------------ ClaimBoard
def test_a_claim_file_hands_every_point_to_exactly_one_process(tmp_path):
    path = str(tmp_path / "claims")
    ClaimBoard.create(path)
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        taken = list(pool.map(_claim_all, [path, path]))
    points = sorted(i for blocks in taken for begin, end in blocks for i in range(begin, end))
    assert points == list(range(2_000))
    assert all(blocks for blocks in taken)  # both took part
    # later blocks are smaller (guided): the last ones are single points
    assert max(end - begin for blocks in taken for begin, end in blocks) == 500
    assert min(end - begin for blocks in taken for begin, end in blocks) == 1


def _claim_all(path: str) -> list[tuple[int, int]]:
    blocks = []
    for begin, end in ClaimBoard.open(path).claims(3, 2_000, members=2):
        blocks.append((begin, end))
        time.sleep(0.0002 * (end - begin))  # "run" the points
    return blocks


def test_two_openers_of_a_board_claim_each_point_once(tmp_path):
    path = str(tmp_path / "claims")
    ClaimBoard.create(path)
    one = ClaimBoard.open(path)
    two = ClaimBoard(os.open(path, os.O_RDWR))  # a second opener: another engine's descriptor
    try:
        first, second = one.claims(0, 100, members=2), two.claims(0, 100, members=2)
        taken: list[tuple[int, int]] = []
        for blocks in (first, second, first, second):
            taken.append(next(blocks))
        taken += list(first) + list(second)
    finally:
        os.close(two.fd)
    points = sorted(i for begin, end in taken for i in range(begin, end))
    assert points == list(range(100))
    assert taken[:4] == [(0, 25), (25, 43), (43, 57), (57, 67)]  # a quarter of what is left each
    assert ClaimBoard.open(path) is one  # kept open per path


def test_a_closed_window_has_nothing_left_and_others_are_untouched(tmp_path):
    path = str(tmp_path / "claims")
    ClaimBoard.create(path)
    board = ClaimBoard.open(path)
    assert next(board.claims(2, 10, members=1)) == (0, 5)
    board.close_window(2, 10)
    assert list(board.claims(2, 10, members=1)) == []
    assert list(board.claims(5, 3, members=4)) == [(0, 1), (1, 2), (2, 3)]  # slot 5: beyond the file
    ClaimBoard.create(path)  # a new board: every window unclaimed again
    assert next(ClaimBoard.open(path).claims(2, 10, members=1)) == (0, 5)


def test_only_the_last_boards_stay_open(tmp_path, monkeypatch):
    monkeypatch.setattr(ClaimBoard, "_open", OrderedDict())
    monkeypatch.setattr(ClaimBoard, "_KEPT", 2)
    boards = []
    for k in range(3):
        ClaimBoard.create(str(tmp_path / f"b{k}"))
        boards.append(ClaimBoard.open(str(tmp_path / f"b{k}")))
    assert list(ClaimBoard._open) == [str(tmp_path / "b1"), str(tmp_path / "b2")]
    with pytest.raises(OSError):
        os.fstat(boards[0].fd)  # closed
    for board in boards[1:]:
        os.close(board.fd)


# ------------------------------------------------------------------ watch
def test_a_point_past_warn_after_is_reported_once_until_unwatched(held):
    reported: list[tuple[int, float]] = []
    worker.register_job("slow", job_of(Sleepy, warn_after=0.2))
    worker.watch("slow", 0.2, report=lambda row, seconds: reported.append((row, seconds)))
    try:
        worker.run_points("slow", None, [(4, 0, (5, 0.7), None), (5, 0, (5, 0.0), None)])
        assert [row for row, _ in reported] == [4]
        assert 0.2 <= reported[0][1] < 0.7
    finally:
        worker.unwatch("slow")
    assert "slow" not in worker._WATCH and "slow" not in worker._REPORTERS
    # A point of the unwatched job running long is no one's business now.
    worker.watch("tick", 0.2)  # keeps the watchdog looking every 0.05 s
    worker._RUNNING[:] = "slow", 9, time.perf_counter() - 10
    try:
        time.sleep(0.3)
    finally:
        worker._RUNNING[:] = None, None, 0.0
        worker.unwatch("tick")
    assert [row for row, _ in reported] == [4]


def test_a_short_warn_after_is_watched_at_once_after_a_long_one(daily):
    # A job watched with the default hour puts the watchdog to sleep for a second; a
    # sweep with warn_after=0.2 that starts then must still be told about its 0.6 s point.
    worker.watch("a-long-job", 3600.0)
    try:
        time.sleep(0.05)
        events = []
        nbb.sweep(Sleepy, daily, {"fast": [5], "pause": [0.6]}, warn_after=0.2, progress=False,
                  on_result=events.append)
        assert [e.index for e in events if isinstance(e, ev.PointSlow)] == [0]
    finally:
        worker.unwatch("a-long-job")


def test_host_name_can_be_overridden(monkeypatch):
    monkeypatch.setenv(worker.HOST_ENV, "farhost")
    assert worker.host_name() == "farhost" and worker.engine_info()["host"] == "farhost"
    assert worker.engine_info()["pid"] == os.getpid()

"""Tests of nbbacktest.parallel.cluster: connecting, clients sharing a cluster, engines that
hang, what engines keep, and clusters that outlive their client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from conftest import Sleepy, SmaCross
from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

import nbbacktest as nbb
from nbbacktest.errors import ClusterError, NbbacktestWarning, SweepError
from nbbacktest.parallel import cluster_sizing, worker
from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.cluster_processes import ORPHAN_SECONDS
from nbbacktest.parallel.cluster_sizing import ENGINE_FOOTPRINT, MAX_ENGINES_PER_CORE
from nbbacktest.parallel.engine_calls import ENGINE_ANSWER_SECONDS
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.segment_files import remove_stale_segments
from nbbacktest.parallel.segment_layout import layout_of

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def shell():
    """The global test shell (started by the first module that asks) with the magics loaded."""
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "nbbacktest")
    yield ip
    ip.run_line_magic("unload_ext", "nbbacktest")


# ------------------------------------------------------------------ connecting
def test_connect_to_a_profile_without_a_cluster_says_how_to_start_one():
    with pytest.raises(ClusterError) as raised:
        Cluster.connect(profile="nbbacktest-no-such-profile", timeout=2)
    message = str(raised.value)
    assert message.startswith("no cluster to connect to (profile='nbbacktest-no-such-profile'): ")
    assert "ipcluster start -n 4" in message and ".." not in message
    assert isinstance(raised.value.__cause__, Exception)  # ipyparallel's own error, kept


def test_cluster_connect_magic_to_a_profile_without_a_cluster(shell, monkeypatch):
    monkeypatch.setattr(Cluster, "_current", None)
    with pytest.raises(UsageError, match=r"no cluster to connect to \(profile='nbbacktest-nope'\)"), \
            capture_output():
        shell.run_line_magic("cluster", "connect --profile nbbacktest-nope")
    assert Cluster.current() is None


# ------------------------------------------------------------------ clients sharing a cluster
@pytest.fixture
def current(cluster, monkeypatch):
    """The session cluster, current again after the test (connecting makes the newest current)."""
    monkeypatch.setattr(Cluster, "_current", cluster)
    return cluster


def held_keys(cluster: Cluster) -> dict[int, set[str]]:
    """The data keys each engine holds, as the engines say."""
    infos = cluster.client[:].apply_async(worker.engine_info).get(timeout=30)
    return {engine: set(info["data"]) for engine, info in zip(cluster.client.ids, infos)}


@contextlib.contextmanager
def on_engines(cluster: Cluster, **settings: Any) -> Iterator[None]:
    """Set worker module constants on every engine of ``cluster``; put them back after."""
    view = cluster.client[:]
    view.execute("from nbbacktest.parallel import worker as _nbb_worker", block=True)
    old = {}
    for name in settings:
        view.execute(f"_nbb_value = _nbb_worker.{name}", block=True)
        old[name] = view.pull("_nbb_value", block=True)
    try:
        for name, value in settings.items():
            view.execute(f"_nbb_worker.{name} = {value!r}", block=True)
        yield
    finally:
        for name, values in old.items():
            view.execute(f"_nbb_worker.{name} = {values[0]!r}", block=True)


def forget(cluster: Cluster, *keys: str) -> None:
    """The session cluster no longer leases ``keys``: the engines drop them."""
    cluster.client[:].apply_sync(worker.release_data, list(keys), cluster.lease_id)
    cluster._leased.difference_update(keys)


GRID = {"fast": [5, 10, 20], "slow": [30, 60]}


def test_a_client_leaving_keeps_the_data_another_client_uses(current, daily):
    data = daily.iloc[:1800]  # data of this test alone
    key = fingerprint(data)
    first = Cluster.connect(url_file=current.connection_file, timeout=30)
    second = Cluster.connect(url_file=current.connection_file, timeout=30)
    try:
        for client in (first, second):
            sweep = nbb.sweep(SmaCross, data, GRID, cluster=client, progress=False)
            assert sweep.results.status.eq("done").all()
        first.stop()
        assert all(key in keys for keys in held_keys(current).values())
        for _ in range(2):  # this sweep and the ones after it
            again = nbb.sweep(SmaCross, data, GRID, cluster=second, progress=False)
            assert again.status == "complete", again.reason
            assert again.results.status.eq("done").all(), again.results.error.dropna().unique()
    finally:
        first.stop()
        second.stop()
    # No connected client uses it any more: the engines let it go.
    assert not any(key in keys for keys in held_keys(current).values())


def test_share_sends_again_what_an_engine_dropped(current, daily):
    data = daily.iloc[:1700]
    key = fingerprint(data)
    try:
        current.share(data, key)
        dropped = current.ids[0]
        current.client[dropped].apply_sync(worker.release_data, [key])  # as a budget or a lapse would
        current.share(data, key)
        assert all(key in keys for keys in held_keys(current).values())
        sweep = nbb.sweep(SmaCross, data, GRID, cluster=current, progress=False)
        assert sweep.results.status.eq("done").all(), sweep.results.error.dropna().unique()
    finally:
        forget(current, key)


DEAD_CLIENT = """
import os, signal, sys
import nbbacktest as nbb
from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.fingerprint import fingerprint

data = nbb.load_sample("daily").iloc[:1600]
client = Cluster.connect(url_file=sys.argv[1], timeout=30)
client.share(data, fingerprint(data))
print(fingerprint(data), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies without releasing anything
"""


def test_the_lease_of_a_client_that_died_lapses(current):
    out = subprocess.run([sys.executable, "-c", DEAD_CLIENT, current.connection_file],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == -signal.SIGKILL, out.stderr
    key = out.stdout.strip()
    try:
        assert all(key in keys for keys in held_keys(current).values())
        with on_engines(current, LEASE_SECONDS=1.0, IN_USE_SECONDS=0.5):
            time.sleep(1.2)
            # Any share (here of nothing held) renews the caller's leases and lets lapsed ones go.
            current.client[:].apply_sync(worker.lease_data, "no-such-data", current.lease_id)
            assert not any(key in keys for keys in held_keys(current).values())
    finally:
        remove_stale_segments()  # the dead client's segment file


# ------------------------------------------------------------------ what engines keep
def frames_of(daily, *lengths: int) -> tuple[list, list[str]]:
    frames = [daily.iloc[:n] for n in lengths]
    return frames, [fingerprint(frame) for frame in frames]


def test_engines_keep_the_least_recently_used_idle_data_within_a_count(current, daily):
    frames, keys = frames_of(daily, 1010, 1020, 1030, 1040)
    try:
        with on_engines(current, IDLE_KEPT=2, IN_USE_SECONDS=0.0):
            for frame, key in zip(frames, keys):
                current.share(frame, key)
            for held in held_keys(current).values():
                assert held & set(keys) == {keys[2], keys[3]}
            # A sweep on dropped data sends it again; the least recently used goes.
            sweep = nbb.sweep(SmaCross, frames[0], GRID, cluster=current, progress=False)
            assert sweep.results.status.eq("done").all(), sweep.results.error.dropna().unique()
            for held in held_keys(current).values():
                assert held & set(keys) == {keys[3], keys[0]}
    finally:
        forget(current, *keys)


def test_engines_keep_idle_data_within_a_budget_of_bytes(current, daily):
    frames, keys = frames_of(daily, 1110, 1120, 1130)
    two = sum(layout_of(frame)[0].nbytes for frame in frames[1:])
    try:
        with on_engines(current, IDLE_BYTES=two - 1, IN_USE_SECONDS=0.0):
            for frame, key in zip(frames, keys):
                current.share(frame, key)
            for held in held_keys(current).values():
                assert held & set(keys) == {keys[2]}
    finally:
        forget(current, *keys)


class Slow(Sleepy):
    _pause = 0.2


def test_the_data_of_a_running_sweep_stays_beyond_the_budget(current, daily):
    frames, keys = frames_of(daily, 1210, 1220, 1230)
    other = Cluster.connect(url_file=current.connection_file, timeout=30)
    Cluster._current = current
    other.refresh_hosts()  # now, not behind the sweep's chunks
    try:
        with on_engines(current, IDLE_KEPT=0, IN_USE_SECONDS=1.0):
            # ~20 s of 0.2 s points on 2 engines, each reading the data; a share from another
            # client waits for the engines' queued chunks (~2 s a round trip).
            sweep = nbb.sweep(Slow, frames[0], {"fast": range(2, 201)}, cluster=current,
                              progress=False, block=False)
            deadline = time.monotonic() + 30
            while sweep.progress < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            other.share(frames[1], keys[1])
            time.sleep(1.2)  # frames[1] is no longer in use
            other.share(frames[2], keys[2])
            during = held_keys(current)
            running = sweep.progress < len(sweep)
            sweep.cancel()  # the rows run so far tell
            sweep.result(timeout=60)
        assert running and sweep.progress > 10
        assert not sweep.results.status.eq("failed").any(), sweep.results.error.dropna().unique()
        for held in during.values():
            assert keys[0] in held and keys[1] not in held
    finally:
        other.stop()
        forget(current, *keys)


# ------------------------------------------------------------------ engines that hang
def test_a_stopped_engine_is_left_out_of_share_and_all_stopped_is_one_error(daily, monkeypatch):
    monkeypatch.setattr(Cluster, "_current", Cluster._current)  # the session cluster stays current
    own = Cluster(engines=2, timeout=120)
    try:
        pids = own.pids
        hung, alive = max(pids), min(pids)
        os.kill(pids[hung], signal.SIGSTOP)
        try:
            data = daily.iloc[:1500]
            started = time.monotonic()
            with pytest.warns(NbbacktestWarning, match=rf"engine\(s\) {hung} \(pid {pids[hung]}\) did not"
                              r" answer in 5 seconds and are left out.*kill -CONT"):
                assert own.share(data, fingerprint(data)) == 0
            assert time.monotonic() - started < ENGINE_ANSWER_SECONDS + 5
            assert own.holds(fingerprint(data)) == [alive]
            # Stopped in the middle of a task: what is queued on it is not work in progress.
            own.client[alive].apply_async(time.sleep, 8)
            time.sleep(0.5)
            os.kill(pids[alive], signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(ClusterError, match=r"none of the engines 0, 1 answered in 5 seconds: they"
                               r" are stopped \(SIGSTOP\), hung or swapping. Resume them"):
                own.share(daily.iloc[:1400], fingerprint(daily.iloc[:1400]))
            assert time.monotonic() - started < ENGINE_ANSWER_SECONDS + 5
        finally:
            for pid in pids.values():
                os.kill(pid, signal.SIGCONT)
    finally:
        own.stop()


# ------------------------------------------------------------------ clients that die
ORPHANED = """
import time
import nbbacktest as nbb
from nbbacktest.parallel.fingerprint import fingerprint

cluster = nbb.Cluster(engines=1, timeout=120)
data = nbb.load_sample("daily")
cluster.share(data, fingerprint(data))
print(*cluster.process_ids(), *cluster.pids.values(), cluster._watchdog.pid, flush=True)
print(*cluster.segment_paths(), cluster.connection_file, flush=True)
time.sleep(300)
"""


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by its parent
    except psutil.Error:
        return True


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_cluster_ends_itself_when_its_client_is_killed(how):
    client = subprocess.Popen([sys.executable, "-c", ORPHANED], stdout=subprocess.PIPE, text=True)
    processes: list[psutil.Process] = []
    try:
        assert client.stdout is not None
        processes = [psutil.Process(int(pid)) for pid in client.stdout.readline().split()]
        files = client.stdout.readline().split()
        assert len(processes) >= 4 and len(files) == 2 and all(os.path.exists(f) for f in files)
        os.kill(client.pid, how)
        client.wait(timeout=10)
        deadline = time.monotonic() + ORPHAN_SECONDS
        while time.monotonic() < deadline and not all(_gone(p) for p in processes):
            time.sleep(0.1)
        assert [p.pid for p in processes if not _gone(p)] == []
        assert [f for f in files if os.path.exists(f)] == []  # its segment and connection file
    finally:
        client.kill()
        client.wait(timeout=10)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()


# ------------------------------------------------------------------ engine counts
def test_more_local_engines_than_the_machine_runs_is_refused_before_anything_starts(shell, monkeypatch):
    monkeypatch.setattr(Cluster, "_current", None)  # (the magic refuses to start a second one)
    before = set(psutil.Process().children(recursive=True))
    with pytest.raises(SweepError, match=r"engines=1000000 is more local engines than this machine"
                                         r" can run: it has \d+ core\(s\) \(at most \d+ engines, 4 per"
                                         r" core\).*Use engines=-1 for one engine per core"):
        Cluster(engines=10**6)
    too_many = (os.cpu_count() or 1) * MAX_ENGINES_PER_CORE + 1
    with pytest.raises(SweepError, match=f"engines={too_many} is more local engines"):
        Cluster(engines=too_many)
    # The bound is by memory too: no more engines than free memory holds.
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: 3 * ENGINE_FOOTPRINT)
    with pytest.raises(SweepError, match=r"room for 3 engines of 150 MiB"):
        Cluster(engines=4)
    assert set(psutil.Process().children(recursive=True)) == before  # nothing was started
    with pytest.raises(UsageError, match="engines=1000000 is more local engines"), capture_output():
        shell.run_line_magic("cluster", "start -n 1000000")

"""Tests of nbbacktest.parallel.cluster_processes: finding and reaping a cluster's processes,
and the watchdog that ends a cluster whose client is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from nbbacktest.parallel.cluster_processes import (
    ORPHAN_SECONDS,
    WATCH_GRACE,
    WATCH_INTERVAL,
    end_watchdog,
    launched_processes,
    reap,
    start_watchdog,
)
from nbbacktest.parallel.segment_files import SEGMENT_PREFIX

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]
# ignores SIGTERM: only SIGKILL ends it
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
            " time.sleep(120)"]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_orphan_seconds_cover_a_look_and_the_grace() -> None:
    assert ORPHAN_SECONDS > WATCH_INTERVAL + WATCH_GRACE


def test_reap_kills_what_does_not_exit_in_time() -> None:
    polite = subprocess.Popen(SLEEP)
    stubborn = subprocess.Popen(STUBBORN, stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline()  # its handler is set
        processes = [psutil.Process(polite.pid), psutil.Process(stubborn.pid)]
        polite.terminate()
        stubborn.terminate()  # ignored
        started = time.monotonic()
        reap(processes, timeout=0.5)
        assert time.monotonic() - started < 5
        # reap waited for them (psutil collected their exit codes): both are gone, the one
        # that ignored SIGTERM killed
        assert all(_gone(p) for p in processes)
        assert processes[0].returncode == -signal.SIGTERM  # type: ignore[attr-defined]
        assert processes[1].returncode == -signal.SIGKILL  # type: ignore[attr-defined]
    finally:
        for child in (polite, stubborn):
            child.kill()
            child.wait(timeout=10)
        assert stubborn.stdout is not None
        stubborn.stdout.close()


def test_launched_processes_finds_launchers_and_their_children() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c',"
         " 'import time; time.sleep(120)']); print(c.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        cluster = SimpleNamespace(
            controller=SimpleNamespace(pid=parent.pid),
            engines={"set": SimpleNamespace(launchers={0: SimpleNamespace(pid=None),
                                                        1: SimpleNamespace(pid=-1),
                                                        2: SimpleNamespace(pid=2**22 + 12345)}),
                     "bare": SimpleNamespace()},
        )
        found = [p.pid for p in launched_processes(cluster)]
        assert found == [parent.pid, child]  # no pid, a negative one and a gone one are skipped
        no_controller = SimpleNamespace(controller=None, engines={"set": SimpleNamespace(
            launchers={0: SimpleNamespace(pid=parent.pid)})})
        assert [p.pid for p in launched_processes(no_controller)] == [parent.pid, child]
        processes = launched_processes(cluster)
        reap(processes, timeout=0)
        assert all(_gone(p) for p in processes)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        assert parent.stdout is not None
        parent.stdout.close()


def test_end_watchdog_ends_it_and_takes_none() -> None:
    end_watchdog(None)
    process = subprocess.Popen(SLEEP)
    end_watchdog(process)  # type: ignore[arg-type]
    assert process.returncode == -signal.SIGTERM


CLIENT = """
import json, sys, time
from nbbacktest.parallel.cluster_processes import start_watchdog
watchdog = start_watchdog(sys.argv[1], sys.argv[2])
print(watchdog.pid, flush=True)
time.sleep(120)
"""

CLUSTER_PROCESS = "import time; print(1, flush=True); time.sleep(120)"


def test_the_watchdog_ends_the_cluster_and_its_files_when_the_client_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBBACKTEST_SHM_DIR", str(tmp_path))
    profile = tmp_path / "profile"
    (profile / "security").mkdir(parents=True)
    cluster_id = f"test-{os.getpid()}"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, cluster_id, str(profile)],
                              stdout=subprocess.PIPE, text=True)
    env = {**os.environ, "IPP_CLUSTER_ID": cluster_id, "IPP_PROFILE_DIR": str(profile)}
    other_env = {**env, "IPP_CLUSTER_ID": "another-cluster"}
    member = subprocess.Popen([sys.executable, "-c", CLUSTER_PROCESS], env=env, stdout=subprocess.PIPE)
    stranger = subprocess.Popen([sys.executable, "-c", CLUSTER_PROCESS], env=other_env,
                                stdout=subprocess.PIPE)
    watchdog = None
    try:
        assert client.stdout is not None and member.stdout is not None and stranger.stdout is not None
        watchdog = psutil.Process(int(client.stdout.readline()))
        member.stdout.readline()
        stranger.stdout.readline()
        mine = tmp_path / f"{SEGMENT_PREFIX}{client.pid}-abc"
        others = tmp_path / f"{SEGMENT_PREFIX}{os.getpid()}-abc"
        connection = profile / "security" / f"ipcontroller-{cluster_id}-client.json"
        for path in (mine, others, connection):
            path.write_text("x")
        time.sleep(2 * WATCH_INTERVAL)
        assert member.poll() is None and not _gone(watchdog)  # the client lives: nothing happens
        client.kill()
        client.wait(timeout=10)
        member.wait(timeout=ORPHAN_SECONDS)
        deadline = time.monotonic() + ORPHAN_SECONDS
        while not _gone(watchdog) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(watchdog)
        assert member.returncode == -signal.SIGTERM
        assert stranger.poll() is None  # another cluster's process is spared
        assert not mine.exists() and not connection.exists()
        assert others.exists()  # another process's segment is left alone
    finally:
        for process in (client, member, stranger):
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        if watchdog is not None and not _gone(watchdog):
            watchdog.kill()


def test_start_watchdog_returns_a_process_that_end_watchdog_ends() -> None:
    watchdog = start_watchdog("no-such-cluster", "/no/such/profile")
    try:
        time.sleep(0.5)
        assert watchdog.poll() is None  # this process lives: it waits
    finally:
        end_watchdog(watchdog)
    assert watchdog.returncode is not None

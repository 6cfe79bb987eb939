"""The processes of a cluster started here: finding them, reaping them, and the watchdog
that ends the cluster when its client process is gone.

:func:`start_watchdog` launches a small process of its own (standard library and
psutil only) that waits for the client to exit, then signals every process of the
cluster and removes the client's segments and the cluster's connection files, within
:data:`ORPHAN_SECONDS`. :func:`reap` makes sure the processes a clean stop signalled
are gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ORPHAN_SECONDS",
    "WATCH_GRACE",
    "WATCH_INTERVAL",
    "end_watchdog",
    "launched_processes",
    "reap",
    "start_watchdog",
]

#: Seconds between two looks of a started cluster's watchdog at its client process.
WATCH_INTERVAL = 1.0
#: Seconds the processes of a cluster whose client is gone get to exit on SIGTERM before
#: SIGKILL (controller and engines take well under a second).
WATCH_GRACE = 5.0
#: A cluster started here ends, and its client's shared-memory segments go, at most this
#: many seconds after the client process is gone (SIGKILL, SIGTERM, a crash): one look,
#: the grace, and room for SIGKILL to land on a loaded machine.
ORPHAN_SECONDS = WATCH_INTERVAL + WATCH_GRACE + 4.0


def launched_processes(cluster: Any) -> list[Any]:
    """The controller, engine and nanny processes (``psutil.Process``) an
    ``ipyparallel.Cluster`` started, children included; empty when none is known.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> launched_processes(SimpleNamespace(controller=None, engines={}))   # nothing started yet
    []
    """
    import psutil

    launchers = [cluster.controller] if cluster.controller is not None else []
    for engine_set in cluster.engines.values():
        launchers.extend(getattr(engine_set, "launchers", {}).values())
    found: list[Any] = []
    for launcher in launchers:
        pid = getattr(launcher, "pid", None)
        if not pid or pid < 0:
            continue
        try:
            process = psutil.Process(pid)
            found.extend([process, *process.children(recursive=True)])
        except psutil.Error:
            continue
    return found


def reap(processes: Iterable[Any], timeout: float) -> None:
    """Give ``processes`` (``psutil.Process``) ``timeout`` seconds to exit, then kill the rest.

    Examples
    --------
    >>> import subprocess, sys, psutil
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    >>> process = psutil.Process(child.pid)
    >>> reap([process], timeout=0.1)
    >>> process.is_running()
    False
    """
    import psutil

    _, alive = psutil.wait_procs(list(processes), timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


# Run by a small process of its own (stdlib and psutil only: nbbacktest's imports would
# cost it ~100 MB) in a session of its own, so the signal that ends the client spares it.
_WATCHDOG = r"""
import json, os, sys, time
import psutil

args = json.loads(sys.argv[1])

def gone(process):
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True

try:
    client = psutil.Process(args["client"])
    if client.create_time() != args["born"]:
        raise psutil.NoSuchProcess(args["client"])
except psutil.Error:
    client = None
while client is not None and not gone(client):
    time.sleep(args["interval"])
# Every process of the cluster carries its id and profile in its environment.
mine = []
for process in psutil.process_iter():
    try:
        env = process.environ()
    except psutil.Error:
        continue
    if (process.pid != os.getpid() and env.get("IPP_CLUSTER_ID") == args["cluster_id"]
            and env.get("IPP_PROFILE_DIR") == args["profile_dir"]):
        mine.append(process)
for signal_them in ("terminate", "kill"):
    for process in mine:
        try:
            getattr(process, signal_them)()
        except psutil.Error:
            pass
    deadline = time.monotonic() + args["grace"]
    while time.monotonic() < deadline and not all(gone(p) for p in mine):
        time.sleep(0.1)
    mine = [p for p in mine if not gone(p)]
for name in os.listdir(args["segments"]):
    if name.startswith(args["prefix"]):
        try:
            os.unlink(os.path.join(args["segments"], name))
        except OSError:
            pass
security = os.path.join(args["profile_dir"], "security")
cluster_id = args["cluster_id"]
for name in (f"cluster-{cluster_id}.json", f"ipcontroller-{cluster_id}-client.json",
             f"ipcontroller-{cluster_id}-engine.json"):
    try:
        os.unlink(os.path.join(security, name))
    except OSError:
        pass
"""


def start_watchdog(cluster_id: str, profile_dir: str) -> subprocess.Popen[bytes]:
    """A process that ends the cluster ``cluster_id`` once this process is gone.

    Within :data:`ORPHAN_SECONDS`, it signals every process whose environment names the
    cluster (controller, engines, nannies, engines started later alike) and removes this
    process's segments and the cluster's connection files.
    :meth:`~nbbacktest.parallel.cluster.Cluster.stop` ends it with :func:`end_watchdog`.
    """
    import psutil

    from nbbacktest.parallel.segment_files import SEGMENT_PREFIX, segment_dir

    me = psutil.Process()
    args = {
        "client": me.pid, "born": me.create_time(), "cluster_id": cluster_id,
        "profile_dir": profile_dir, "segments": str(segment_dir()),
        "prefix": f"{SEGMENT_PREFIX}{me.pid}-", "interval": WATCH_INTERVAL, "grace": WATCH_GRACE,
    }
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, json.dumps(args)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def end_watchdog(watchdog: subprocess.Popen[bytes] | None) -> None:
    """End a watchdog :func:`start_watchdog` returned (nothing for None): SIGTERM, then SIGKILL
    when it has not exited within 5 seconds."""
    if watchdog is None:
        return
    watchdog.terminate()
    try:
        watchdog.wait(timeout=5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait(timeout=5)


"""The ``%cluster`` status: a cluster's busy/idle counts, and the table that prints them."""

from __future__ import annotations

import time

from conftest import SmaCross

from nbbacktest.display.status import format_status
from nbbacktest.engine.backtest import Settings
from nbbacktest.parallel import worker
from nbbacktest.parallel.cluster_runner import ClusterRunner
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult, SweepWriter


def wait_until_idle(cluster, seconds: float = 60.0) -> None:
    """Until no engine of the session's cluster runs anything: an earlier test's leftover
    task (a cancelled sweep's point, another client's work) really is busy."""
    deadline = time.monotonic() + seconds
    while cluster.status()["busy"]:
        queues = cluster.client.queue_status(verbose=True)
        assert time.monotonic() < deadline, f"the cluster stayed busy for {seconds} s: {queues}"
        time.sleep(0.1)


#: Run on an engine: the reply to this very request is never sent, as when an interrupt
#: reaches the engine between two tasks.
LOSE_OWN_REPLY = """
session = get_ipython().kernel.session
_nbb_send = session.send

def _nbb_dropping(stream, msg_or_type, *args, **kwargs):
    if msg_or_type == "execute_reply":
        del session.send  # the class's own send again
        return None
    return _nbb_send(stream, msg_or_type, *args, **kwargs)

session.send = _nbb_dropping
"""


def test_an_idle_cluster_reads_idle_right_after_its_engines_answered(cluster) -> None:
    # The controller counts a task as queued until it hears that the engine finished,
    # which can be after this client has the answer: status() must not call that busy.
    ids = list(cluster.client.ids)
    wait_until_idle(cluster)
    for _ in range(20):
        answers, silent = cluster._calls.ask(ids, 10, worker.engine_info)
        assert sorted(answers) == ids and not silent
        status = cluster.status()
        assert (status["busy"], status["idle"]) == (0, len(ids)), status
    assert format_status(cluster.status()).splitlines()[0].endswith(f"0 busy, {len(ids)} idle")


def test_a_cluster_running_a_task_reads_busy(cluster) -> None:
    view = cluster.client.load_balanced_view(targets=[cluster.client.ids[0]])
    task = view.apply_async(time.sleep, 1.5)
    try:
        deadline = time.monotonic() + 1.0
        while cluster.status()["busy"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.status()["busy"] == 1
    finally:
        task.get(timeout=10)


def test_a_stopped_cluster_prints_stopped() -> None:
    assert format_status({"running": False}) == "Cluster: stopped"


def test_an_engine_idle_after_its_reply_was_lost_reads_idle(cluster, daily) -> None:
    # The controller keeps a task whose reply was lost queued for ever; once a cancelled
    # sweep has seen the engine idle, status() must not call it busy.
    engine = cluster.client.ids[-1]
    lost = cluster.client[engine].execute(LOSE_OWN_REPLY, block=False)
    try:
        lost.wait(1.0)
        assert not lost.ready(), lost.get(0)
        assert cluster.client[engine].apply_async(sum, [1, 2]).get(timeout=30) == 3  # idle
        # The controller hears that the engine finished a task after this client has the
        # answer (see the first test above): its count settles on the lost task alone.
        deadline = time.monotonic() + 10
        while cluster.client.queue_status()[engine]["queue"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.client.queue_status()[engine]["queue"] == 1  # the controller's count
        assert cluster.status()["busy"] == 1
        spec = SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings())
        runner = ClusterRunner(SweepWriter(SweepResult(spec, daily)), cluster, None, "k", b"", None)
        assert runner._busy({engine: [lost]}) == {}  # what cancel asks of engines that went silent
        assert cluster.status()["busy"] == 0
        assert format_status(cluster.status()).splitlines()[0].endswith(f"0 busy, {len(cluster.ids)} idle")
    finally:
        cluster.client.outstanding.discard(lost.msg_ids[0])  # the session's client waits on it no more

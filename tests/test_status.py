"""The ``%cluster`` status: a cluster's busy/idle counts, and the table that prints them."""

from __future__ import annotations

import time

from nbbacktest.display.status import format_status
from nbbacktest.parallel import worker


def wait_until_idle(cluster, seconds: float = 60.0) -> None:
    """Until no engine of the session's cluster runs or queues anything: an earlier test's
    leftover task (a cancelled sweep's point, another client's work) really is busy."""
    deadline = time.monotonic() + seconds
    while True:
        queues = cluster.client.queue_status()
        work = sum(q["queue"] + q["tasks"] for e, q in queues.items() if e != "unassigned")
        if not work and not queues.get("unassigned"):
            return
        assert time.monotonic() < deadline, f"the cluster stayed busy for {seconds} s: {queues}"
        time.sleep(0.1)


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

"""Asking a cluster's engines to run a function, and telling which of them gave no answer.

An engine that left or died gives none, and so does one that stays silent with
nothing but our request queued for :data:`ENGINE_ANSWER_SECONDS` (stopped by
SIGSTOP, hung, or swapping): :class:`EngineCalls` returns without it instead of
waiting for ever. An engine busy with other work (another sweep's) is waited for,
up to the caller's timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ENGINE_ANSWER_SECONDS", "EngineCalls", "process_halted"]

#: Seconds an engine with no other task queued has to answer before :meth:`Cluster.share`
#: leaves it out with a warning: a healthy engine answers in milliseconds, so this only
#: catches a stopped (SIGSTOP), hung or swapping one; the controller itself takes ~35 s.
#: An engine busy with other tasks (another sweep's) is waited for, up to SHARE_TIMEOUT.
ENGINE_ANSWER_SECONDS = 5.0
#: Seconds between two looks at engines that have not answered yet (each look asks the
#: controller for their queues: one round trip).
_ANSWER_POLL = 0.25


def process_halted(pid: int) -> bool:
    """Whether process ``pid`` of this host is stopped by a signal (SIGSTOP, a debugger).

    False for a running process, and for one that does not exist.

    Examples
    --------
    >>> import os
    >>> process_halted(os.getpid())
    False
    """
    import psutil

    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


class EngineCalls:
    """Runs functions on the engines of an ``ipyparallel.Client``; each call returns the
    answers and the engines that gave none.

    Requests an engine never answered stay queued there; they are remembered, so that
    they are not taken for other work queued on it at the next call.

    Parameters
    ----------
    client : ipyparallel.Client
        A connected client.
    halted : callable, optional
        ``halted(engine)`` tells whether the engine's process is stopped by a signal:
        then the tasks queued on it are not work in progress. Default: never.

    Examples
    --------
    >>> calls = EngineCalls(cluster.client)   # doctest: +SKIP
    >>> calls.ask(cluster.ids, 30.0, os.getpid)   # doctest: +SKIP
    ({0: 4242, 1: 4243}, [])
    """

    def __init__(self, client: Any, halted: Callable[[int], bool] | None = None) -> None:
        self.client = client
        self._halted: Callable[[int], bool] = halted if halted is not None else _never
        # Requests to engines that gave no answer: still queued there, not another's work.
        self._unanswered: dict[int, list[Any]] = {}

    def ask(self, ids: Iterable[int], timeout: float, function: Any, *args: Any,
            **kwargs: Any) -> tuple[dict[int, Any], list[int]]:
        """Run ``function(*args, **kwargs)`` on each engine of ``ids``: the answers, and the
        engines that gave none.

        An engine gives none when it left or died, when it has had nothing else queued for
        :data:`ENGINE_ANSWER_SECONDS` and still not answered (stopped or hung), or when
        ``timeout`` seconds passed. A task that raised raises here.

        Returns
        -------
        answers : dict of int to object
            Each answering engine's return value.
        silent : list of int
            The engines that gave none, sorted.
        """
        import ipyparallel as ipp

        pending = {self.client[engine].apply_async(function, *args, **kwargs): engine for engine in ids}
        answers: dict[int, Any] = {}
        silent: list[int] = []
        idle_since: dict[int, float] = {}
        deadline = time.monotonic() + timeout
        ar: Any  # an ipyparallel AsyncResult: a Future with a get()
        while pending:
            finished, _ = concurrent.futures.wait(list(pending), timeout=_ANSWER_POLL)
            for ar in finished:
                engine = pending.pop(ar)
                try:
                    answers[engine] = ar.get(timeout=0)
                except (ipp.error.EngineError, ipp.error.TaskAborted):
                    silent.append(engine)  # it died (or the controller dropped it) meanwhile
                except ipp.RemoteError as error:
                    if error.ename not in ("EngineError", "TaskAborted"):
                        raise
                    silent.append(engine)
                with contextlib.suppress(Exception):  # the client would keep it for ever
                    self.client.purge_local_results(jobs=ar)
            if not pending:
                break
            now = time.monotonic()
            registered = set(self.client.ids)
            # The controller counts the tasks queued on each engine, ours included: an
            # engine with ours alone that stays silent is stopped, one with more is busy.
            asked = sorted(set(pending.values()) & registered)
            queues = self.queue_counts(asked) if asked else {}
            if queues is None:  # the controller itself is gone: nobody will answer
                silent.extend(pending.values())
                break
            for ar, engine in list(pending.items()):
                queue = queues.get(engine, {})
                ours = 1 + sum(not old.done() for old in self._unanswered.get(engine, []))
                if queue.get("queue", 0) + queue.get("tasks", 0) > ours and not self._halted(engine):
                    idle_since.pop(engine, None)
                    stopped = False
                else:
                    stopped = now - idle_since.setdefault(engine, now) >= ENGINE_ANSWER_SECONDS
                if stopped or engine not in registered or now >= deadline:
                    silent.append(pending.pop(ar))
                    unanswered = self._unanswered.setdefault(engine, [])
                    unanswered[:] = [old for old in unanswered if not old.done()] + [ar]
        return answers, sorted(silent)

    def queue_counts(self, engines: list[int]) -> dict[Any, Any] | None:
        """The controller's counts of tasks queued on ``engines``; None when it does not
        answer within :data:`ENGINE_ANSWER_SECONDS` (``queue_status`` would wait for ever)."""
        box: dict[str, Any] = {}

        def ask() -> None:
            try:
                box["queues"] = self.client.queue_status(targets=engines)
            except Exception as error:  # raised in the caller's thread below
                box["error"] = error

        # The client sends from its own IO thread: asking from another thread is safe,
        # and one left waiting on a dead controller costs nothing but itself.
        thread = threading.Thread(target=ask, name="nbbacktest-queue-status", daemon=True)
        thread.start()
        thread.join(ENGINE_ANSWER_SECONDS)
        if "error" in box:
            raise box["error"]
        return box.get("queues")


def _never(engine: int) -> bool:
    return False

"""Tests of nbbacktest.parallel.engine_calls: answers from engines, and the engines that give
none (left, died, stopped, hung), against a fake client whose engines behave on demand."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import ipyparallel as ipp
import pytest

from nbbacktest.parallel import engine_calls
from nbbacktest.parallel.engine_calls import EngineCalls, process_halted

ANSWER = 0.3  # ENGINE_ANSWER_SECONDS in these tests


class FakeResult(concurrent.futures.Future):
    """What ``apply_async`` returns: a Future with ipyparallel's ``get``."""

    def get(self, timeout: float | None = None) -> Any:
        return self.result(timeout)


class FakeClient:
    """Engines by behaviour: "ok" answers, "silent" never does (its queue holds only our
    requests), "busy" never does while it has other tasks queued, "died" fails with
    EngineError, "aborted" with a RemoteError(TaskAborted), "raises" with another RemoteError."""

    def __init__(self, **engines: str) -> None:
        self.behaviour = {int(name.lstrip("e")): how for name, how in engines.items()}
        self.ids = list(self.behaviour)
        self.sent: dict[int, list[FakeResult]] = {e: [] for e in self.behaviour}
        self.purged: list[Any] = []
        self.queue_status_hangs = False

    def __getitem__(self, engine: int) -> FakeClient:
        self._target = engine
        return self

    def apply_async(self, function: Any, *args: Any, **kwargs: Any) -> FakeResult:
        engine, result = self._target, FakeResult()
        how = self.behaviour[engine]
        if how == "ok":
            result.set_result(function(*args, **kwargs))
        elif how == "died":
            result.set_exception(ipp.error.EngineError("engine died"))
        elif how == "aborted":
            result.set_exception(ipp.RemoteError("TaskAborted", "aborted", ""))
        elif how == "raises":
            result.set_exception(ipp.RemoteError("ValueError", "bad input", ""))
        self.sent[engine].append(result)
        return result

    def queue_status(self, targets: list[int]) -> dict[int, dict[str, int]]:
        if self.queue_status_hangs:
            threading.Event().wait(60)
        counts = {}
        for engine in targets:
            waiting = sum(not r.done() for r in self.sent[engine])
            other = 5 if self.behaviour[engine] == "busy" else 0
            counts[engine] = {"queue": 0, "tasks": waiting + other}
        return counts

    def purge_local_results(self, jobs: Any) -> None:
        self.purged.append(jobs)


@pytest.fixture(autouse=True)
def quick_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_calls, "ENGINE_ANSWER_SECONDS", ANSWER)


def test_answers_of_every_engine_with_args_and_kwargs() -> None:
    client = FakeClient(e0="ok", e1="ok", e2="ok")
    answers, silent = EngineCalls(client).ask([2, 0], 10.0, divmod, 17, 5)
    assert answers == {0: (3, 2), 2: (3, 2)} and silent == []
    answers, _ = EngineCalls(client).ask([1], 10.0, int, "ff", base=16)
    assert answers == {1: 255}
    # every finished request is purged from the client, which would keep it for ever
    assert len(client.purged) == 3


def test_a_silent_engine_is_left_out_after_the_answer_time_not_the_timeout() -> None:
    client = FakeClient(e0="ok", e1="silent", e2="silent")
    calls = EngineCalls(client)
    started = time.monotonic()
    answers, silent = calls.ask([0, 1, 2], 30.0, os.getpid)
    took = time.monotonic() - started
    assert answers == {0: os.getpid()} and silent == [1, 2]
    assert ANSWER <= took < ANSWER + 2
    # The unanswered request is still queued on the engine: the next call does not take it
    # for other work (which would wait out the timeout) but for ours.
    started = time.monotonic()
    assert calls.ask([1], 30.0, os.getpid) == ({}, [1])
    assert time.monotonic() - started < ANSWER + 2
    assert len(calls._unanswered[1]) == 2


def test_a_busy_engine_is_waited_for_up_to_the_timeout() -> None:
    client = FakeClient(e0="busy")
    started = time.monotonic()
    assert EngineCalls(client).ask([0], 1.2, os.getpid) == ({}, [0])
    assert time.monotonic() - started >= 1.2


def test_a_busy_engine_stopped_by_a_signal_is_left_out_at_once() -> None:
    client = FakeClient(e0="busy", e1="busy")
    asked: list[int] = []

    def halted(engine: int) -> bool:
        asked.append(engine)
        return engine == 1

    started = time.monotonic()
    answers, silent = EngineCalls(client, halted=halted).ask([0, 1], 1.5, os.getpid)
    assert silent == [0, 1] and answers == {}
    assert 1 in asked
    assert time.monotonic() - started >= 1.5  # engine 0 was waited for, engine 1 was not


def test_an_engine_that_left_gives_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_calls, "ENGINE_ANSWER_SECONDS", 5.0)
    client = FakeClient(e0="silent", e1="ok")
    client.ids = [1]  # engine 0 unregistered meanwhile
    started = time.monotonic()
    assert EngineCalls(client).ask([0, 1], 30.0, abs, -2) == ({1: 2}, [0])
    assert time.monotonic() - started < 2.0  # at the first look, not after the answer time


@pytest.mark.parametrize("how", ["died", "aborted"])
def test_an_engine_that_died_or_dropped_the_task_gives_no_answer(how: str) -> None:
    client = FakeClient(e0=how, e1="ok")
    assert EngineCalls(client).ask([0, 1], 30.0, abs, -3) == ({1: 3}, [0])


def test_a_task_that_raised_raises() -> None:
    client = FakeClient(e0="raises")
    with pytest.raises(ipp.RemoteError, match="bad input"):
        EngineCalls(client).ask([0], 30.0, os.getpid)


def test_a_controller_that_does_not_answer_leaves_every_engine_out() -> None:
    client = FakeClient(e0="silent", e1="busy")
    client.queue_status_hangs = True
    calls = EngineCalls(client)
    started = time.monotonic()
    assert calls.queue_counts([0, 1]) is None
    assert ANSWER <= time.monotonic() - started < ANSWER + 2
    assert calls.ask([0, 1], 30.0, os.getpid) == ({}, [0, 1])


def test_queue_counts_raises_the_controllers_error_here() -> None:
    client = FakeClient(e0="ok")

    def broken(targets: list[int]) -> None:
        raise ConnectionError("controller gone")

    client.queue_status = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError, match="controller gone"):
        EngineCalls(client).queue_counts([0])
    assert FakeClient(e0="silent").queue_status([0]) == {0: {"queue": 0, "tasks": 0}}


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait(timeout=10)


def test_process_halted(sleeper: subprocess.Popen[bytes]) -> None:
    assert not process_halted(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while not process_halted(sleeper.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process_halted(sleeper.pid)
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while process_halted(sleeper.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_halted(sleeper.pid)
    sleeper.kill()
    sleeper.wait(timeout=10)
    assert not process_halted(sleeper.pid)  # gone: not halted

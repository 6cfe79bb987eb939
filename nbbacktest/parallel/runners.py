"""Runners: run a sweep's points and write them through its :class:`SweepWriter`.

:class:`LocalRunner` runs them in this process (``engines=None`` or 1);
:class:`~nbbacktest.parallel.cluster_runner.ClusterRunner` over a cluster's
engines. Both run exactly :func:`nbbacktest.parallel.worker.run_points`, chunked by
the same :class:`~nbbacktest.parallel.schedule.ChunkPlanner`, so a point computes
the same bits wherever it runs.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from nbbacktest.parallel import worker
from nbbacktest.parallel.rows import Rows
from nbbacktest.parallel.schedule import ChunkPlanner
from nbbacktest.parallel.sweep import SweepWriter

# The engine id the in-process runner gives its planner.
HERE = -1


class Runner(abc.ABC):
    """Runs a sweep's points and records them through ``writer``."""

    def __init__(self, writer: SweepWriter, fixed_chunk: int | None) -> None:
        self.writer = writer
        self.spec = writer.spec
        self.fixed_chunk = fixed_chunk
        self.key = uuid.uuid4().hex

    def specs(self, rows: Sequence[int]) -> list[worker.PointSpec]:
        """What a task carries for ``rows``."""
        return self.spec.point_specs(rows)

    @abc.abstractmethod
    def prepare(self) -> None:
        """Make the data and the job available, and emit Started."""

    @abc.abstractmethod
    def run(self) -> None:
        """Run every point (or until cancelled), then :meth:`finish`."""

    def drive(self) -> None:
        """:meth:`run`, in the sweep's thread: a failure is the sweep's, already recorded.

        One that escaped before :meth:`finish` still ends the sweep with it: a result
        left unfinished would leave ``wait()`` and ``result()`` blocked for ever.
        """
        try:
            self.run()
        except BaseException as error:
            if not self.writer.result.done():
                with contextlib.suppress(BaseException):
                    self.finish(error)

    def hold_here(self) -> str:
        """Hold the data and register the job in this process; returns the data's key here."""
        key = f"local-{self.key}"
        worker.hold_data(key, self.writer.data)
        worker.register_job(self.key, self.spec.job(key))
        self.watch()
        return key

    def watch(self) -> None:
        """Report points of this sweep that run in this process past ``warn_after``."""
        writer = self.writer
        worker.watch(self.key, self.spec.warn_after,
                     report=lambda row, seconds: writer.slow(row, seconds, None))

    def finish(self, crash: BaseException | None = None) -> None:
        """Stop watching and end the sweep."""
        worker.unwatch(self.key)
        self.writer.finish(crash)


class LocalRunner(Runner):
    """engines=None|1: the same worker.run_points, in this process, chunked by the same planner."""

    def prepare(self) -> None:
        self.data_key = self.hold_here()
        self.writer.started(engines=0)

    def run(self) -> None:
        writer = self.writer
        host = worker.host_name()
        rows = writer.pending_rows()
        interrupter = Interrupter(threading.get_ident())
        writer.on_cancel(interrupter.interrupt)

        def run_chunk(chunk: list[int]) -> tuple[int, float]:
            """Run and record ``chunk``: (points run, their seconds)."""
            out = None
            try:
                with interrupter.armed():
                    out, interrupted = worker.run_points(self.key, None, self.specs(chunk))
            except KeyboardInterrupt:
                # Landed after run_points returned: its rows are kept all the same.
                interrupted = True
                if out is None:
                    out = Rows.empty(self.spec.schema)
            writer.record(out, HERE, host)
            if interrupted:
                writer.stop()
            return len(out.rows), float(out.seconds.sum())

        try:
            # The first point alone: its time sizes the chunks after it.
            points, seconds = run_chunk(rows[:1]) if rows else (0, 0.0)
            planner = ChunkPlanner(rows[1:], seconds / points if points else 0.01, [HERE],
                                   fixed=self.fixed_chunk)
            while planner.remaining and not writer.stopping:
                for _, chunk in planner.due(time.perf_counter()):
                    if writer.stopping:
                        break
                    points, seconds = run_chunk(chunk)
                    planner.done(HERE, points, seconds, time.perf_counter())
        except KeyboardInterrupt:  # cancel's interrupt, landed just outside a chunk
            writer.stop()
        except BaseException as error:
            worker.release_data([self.data_key])
            worker.release_working_memory()
            self.finish(error)
            raise
        worker.release_data([self.data_key])
        worker.release_working_memory()
        self.finish()


class Interrupter:
    """Raises KeyboardInterrupt in the in-process runner's thread while a chunk runs there.

    An engine's running point is stopped by SIGINT; in this process the sweep runs
    in a thread of its own, which no signal reaches, so cancel raises the
    interrupt in that thread instead (delivered between two bytecodes: a point in
    one long C call stops when the call returns).
    """

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self._lock = threading.Lock()
        self._armed = False
        self._sent = False

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """While the block runs, :meth:`interrupt` raises in the thread.

        An interrupt sent as the block ended may still be pending: it is withdrawn on
        the way out, so that it cannot land in the recording of the rows the block
        finished (the cancel flag stops the sweep all the same).
        """
        with self._lock:
            self._armed = True
        try:
            yield
        finally:
            with self._lock:
                self._armed = False
                if self._sent:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)
                    self._sent = False

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the thread, if a chunk runs there now."""
        with self._lock:
            if self._armed:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id),
                                                           ctypes.py_object(KeyboardInterrupt))
                self._armed = False  # one interrupt per cancel
                self._sent = True

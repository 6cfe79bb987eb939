"""The cluster runner: a sweep's points in chunks over a cluster's engines.

At most two chunks are outstanding per engine (see
:mod:`nbbacktest.parallel.schedule`), so that client and controller memory stay
bounded however many points there are. Engines on the client's host share each
chunk: every one of them gets it and they claim its points from a counter in a
small file as they run, so they end together however their speeds differ
(engines on other hosts get chunks of their own). Rows arrive out of order and
are stored in grid order.

It survives what a long sweep meets: engines that die (their points go out
again, one per task once suspected of killing it; lost engines of a cluster we
started are replaced), engines that let the data go, a controller that dies, and
points that ignore the interrupt of a cancel.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import os
import signal
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from typing import Any, cast

from nbbacktest.errors import ClusterError, NbbacktestWarning
from nbbacktest.parallel import worker
from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.events import EngineAdded, EngineLost
from nbbacktest.parallel.rows import Rows, RowsBuilder
from nbbacktest.parallel.runners import Runner
from nbbacktest.parallel.schedule import ChunkPlanner, Timing, measure_point_cost
from nbbacktest.parallel.sweep import SweepWriter

# What sweeps on a cluster measured (point cost per job, round trips), for the next one.
_TIMINGS: weakref.WeakKeyDictionary[Cluster, Timing] = weakref.WeakKeyDictionary()
#: Engines of connected clusters still running a cancelled sweep's task that ignored
#: the interrupt, with those tasks: later sweeps leave them out until the tasks end.
_STUCK: weakref.WeakKeyDictionary[Cluster, dict[int, list[Any]]] = weakref.WeakKeyDictionary()
#: Times a sweep sends its data again to an engine that let it go mid-sweep; after
#: that, its points fail with the KeyError.
RESEND_DATA = 3
#: Engines a cancel killed (see _ClusterRunner._unstick): never given work again,
#: even while the controller still lists them.
_KILLED: weakref.WeakKeyDictionary[Cluster, set[int]] = weakref.WeakKeyDictionary()
#: Seconds a cancelled sweep waits for its engines' points to stop after the interrupt.
CANCEL_WAIT = 5.0
#: Seconds an engine whose task did not come back by then has to answer a trivial
#: one, or count as still running a point (a round trip takes milliseconds).
PROBE_WAIT = 2.0
#: Seconds without a reply after which a sweep checks that its controller still
#: listens (a TCP connection to its registration port, about a millisecond); a dead
#: controller fails the sweep about this long after it died.
CONTROLLER_CHECK = 2.0
#: Seconds to wait for the controller to see a killed engine gone (its heartbeat
#: notices within about a second here).
UNREGISTER_WAIT = 10.0


#: A point out on this many engines that died with it unrun is a failed row: the
#: first death only makes its chunk's points suspects (each then runs alone), the
#: second names the point. Two, not one: an engine may die for reasons of its own.
QUARANTINE_KILLS = 2
#: Seconds a sweep that lost every engine waits for the replacements it started
#: (an engine starts and registers in a few seconds; more on a busy machine).
REPLACE_WAIT = 60.0

#: Engines of one host that share chunks, at most (a shared chunk goes to each of them).
SHARE_GROUP = 8


@dataclasses.dataclass(eq=False)
class _Window:
    """A chunk out on a target: its rows, and what its engines brought back so far."""

    target: int
    rows: list[int]
    waiting: set[int]  #: engines whose task for it has not come back
    members: int  #: engines it went to
    sent: float  #: perf_counter() when it went out
    ran: set[int] = dataclasses.field(default_factory=set)
    seconds: float = 0.0  #: points' seconds, summed over its engines
    interrupted: bool = False
    lost: set[int] = dataclasses.field(default_factory=set)  #: engines that died with it out


class ClusterRunner(Runner):
    """Chunks over the engines, at most two outstanding each; survives lost engines."""

    def __init__(
        self,
        writer: SweepWriter,
        cluster: Cluster,
        wanted: int | None,
        data_key: str,
        job_blob: bytes,
        fixed_chunk: int | None,
    ) -> None:
        super().__init__(writer, fixed_chunk)
        self.cluster = cluster
        self.wanted = wanted
        self.data_key = data_key
        self.job_blob = job_blob
        self.client = cluster.client
        self.point_seconds = math.nan
        #: Rows requeued because an engine died with them: EngineLost reports them.
        self._requeued: dict[int, int] = {}
        #: Engines that died with a chunk of this sweep out.
        self._died: set[int] = set()
        #: Engine deaths each row was out for, unrun (see QUARANTINE_KILLS).
        self._kills: dict[int, int] = {}
        #: Replacement engines asked for, and until when the sweep waits for them.
        self._replacing_until = -math.inf
        #: The controller refused a connection: nothing more can be asked of the cluster.
        self._controller_lost = False

    def prepare(self) -> None:
        writer = self.writer
        killed = _KILLED.get(self.cluster, set())
        ids = sorted(set(self.cluster.ids) - killed)
        if not ids:
            raise ClusterError("the cluster has no engines registered (0 ready)")
        busy = self._still_stuck()
        if busy:
            ids = [e for e in ids if e not in busy]
            if not ids:
                raise ClusterError(
                    f"every engine is still running a point of a cancelled sweep that ignored the"
                    f" interrupt (engines {', '.join(map(str, busy))}): wait for it to end, or"
                    " restart the cluster's engines")
            warnings.warn(
                f"engine(s) {', '.join(map(str, busy))} still run a point of a cancelled sweep"
                " that ignored the interrupt: this sweep runs without them",
                NbbacktestWarning, stacklevel=2)
        if self.wanted is not None:
            if self.wanted > len(ids):
                raise ClusterError(
                    f"engines={self.wanted} but the cluster has {len(ids)} engine(s) registered"
                )
            ids = ids[: self.wanted]
        self.cluster.share(writer.data, self.data_key, ids)
        # An engine that did not answer (share warned, naming it) lacks the data: run without it.
        held = set(self.cluster.holds(self.data_key))
        ids = [e for e in ids if e in held]
        self.engines = ids
        writer.started(engines=len(ids))
        self.rows = writer.pending_rows()
        self.timing = _TIMINGS.setdefault(self.cluster, Timing())
        self.cost_key = self.spec.cost_key(self.data_key)
        known = self.timing.point_seconds.get(self.cost_key)
        if not self.rows:
            return
        if known is not None:
            self.point_seconds = known  # measured by an earlier sweep of the same job
            return
        # Measure one point here (it is also the first pending row: results are
        # identical wherever a point runs), so chunks are sized before anything is sent.
        local_key = self.hold_here()
        try:
            (first, _), self.point_seconds = measure_point_cost(
                lambda: worker.run_points(self.key, None, self.specs(self.rows[:1])))
        finally:
            worker.release_data([local_key])
            worker.release_working_memory()
        writer.record(first, -1, worker.host_name())
        self.rows = self.rows[1:]

    def _still_stuck(self) -> list[int]:
        """Engines left stuck by a cancel (see :meth:`_unstick`) whose task has not ended."""
        stuck = _STUCK.get(self.cluster, {})
        for engine, tasks in list(stuck.items()):
            if all(task.done() for task in tasks) or engine not in self.cluster.ids:
                del stuck[engine]
                for task in tasks:
                    self._forget(task)
        return sorted(stuck)

    def targets(self, hosts: Mapping[int, str]) -> dict[int, list[int]]:
        """The planner's targets: engines of this host share chunks, in groups of up to
        :data:`SHARE_GROUP` (keyed by their first engine); any other engine is its own.

        Sharing needs a claim file every member can open, so only engines on the
        client's host share, and not when the caller fixed ``chunksize`` (points per task).
        """
        local = [e for e in self.engines if hosts.get(e) == self.cluster.host]
        if self.fixed_chunk is not None or len(local) < 2 or not worker.claims_supported():
            local = []
        groups = {group[0]: group for group in
                  (local[i : i + SHARE_GROUP] for i in range(0, len(local), SHARE_GROUP))}
        groups.update({e: [e] for e in self.engines if e not in local})
        return groups

    def run(self) -> None:
        import ipyparallel as ipp

        from nbbacktest.parallel.segment_files import SEGMENT_PREFIX, segment_dir

        writer = self.writer
        client = self.client
        timing = self.timing
        hosts = self.cluster.refresh_hosts(self.engines)
        groups = self.targets(hosts)
        board = None
        if any(len(members) > 1 for members in groups.values()):
            board = str(segment_dir() / f"{SEGMENT_PREFIX}{os.getpid()}-claims-{self.key}")
            worker.ClaimBoard.create(board)
        planner = ChunkPlanner(self.rows, self.point_seconds, groups, fixed=self.fixed_chunk,
                               round_trips=timing.round_trips, task_gap=timing.task_gap,
                               members={g: len(members) for g, members in groups.items()})
        views = {engine: client[engine] for engine in self.engines}
        outstanding: dict[Any, tuple[int, _Window]] = {}
        next_slot = 0  # the claim file's slot of the next shared chunk
        has_job: set[int] = set()
        # Engines that lost the data mid-sweep: when it was last sent again, how often.
        resent: dict[int, tuple[float, int]] = {}
        known_ids = set(client.ids)
        clock = time.perf_counter
        last_heard = last_probe = clock()
        try:
            while True:
                if writer.stopping:
                    self._cancel(outstanding)
                    break
                now = clock()
                if outstanding and min(now - last_heard, now - last_probe) > CONTROLLER_CHECK:
                    # Nothing back for a while: a controller that died would leave the
                    # sweep waiting for ever, since ipyparallel's client does not notice.
                    last_probe = now
                    if not self._controller_answers():
                        self._controller_lost = True
                        raise ClusterError(
                            f"the cluster's controller stopped answering ({self._controller_url()}"
                            " refuses connections): the controller process died or was stopped;"
                            " restart the cluster")
                # Engines that joined get the data and take work; lost ones hand theirs back.
                current = set(client.ids)
                if current != known_ids:
                    for engine in sorted(current - known_ids - _KILLED.get(self.cluster, set())):
                        taking = sum(len(members) for members in groups.values())
                        if self.wanted is None or taking < self.wanted:
                            try:
                                self.cluster.share(writer.data, self.data_key, [engine])
                                hosts.update(self.cluster.refresh_hosts([engine]))
                                views[engine] = client[engine]
                                groups[engine] = [engine]
                                planner.add_engine(engine)
                                writer.emit(EngineAdded(engine=engine, host=hosts.get(engine, "")))
                            except Exception:
                                pass
                    for engine in sorted(known_ids - current):
                        self._lose(engine, groups, planner, outstanding)
                    known_ids = current
                if not planner.engines and time.monotonic() > self._replacing_until:
                    raise ClusterError("every engine of the sweep was lost")
                for target, chunk in planner.due(clock()):
                    members = groups[target]
                    specs = self.specs(chunk)
                    window = _Window(target, chunk, set(members), len(members), clock())
                    shared = (board, next_slot, len(members)) if len(members) > 1 else None
                    next_slot += 1
                    for engine in members:
                        blob = None if engine in has_job else self.job_blob
                        try:
                            ar = views[engine].apply_async(worker.run_points, self.key, blob,
                                                           specs, shared)
                        except (IndexError, ipp.error.NoEnginesRegistered):
                            # It unregistered since client.ids was read: its part of the
                            # chunk comes back empty, and the next pass sees it lost.
                            has_job.discard(engine)
                            self._settle(window, engine, Rows.empty(self.spec.schema), False, planner,
                                         clock())
                            continue
                        has_job.add(engine)
                        outstanding[ar] = (engine, window)
                if not outstanding:
                    if not (planner.remaining and time.monotonic() < self._replacing_until):
                        break
                    time.sleep(0.05)  # no engine left: waiting for the replacements
                    continue
                finished, _ = concurrent.futures.wait(
                    list(outstanding), timeout=0.05,
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                self._report_slow(outstanding)
                if finished:
                    last_heard = clock()
                for ar in finished:
                    ar = cast(Any, ar)  # an ipyparallel AsyncResult
                    engine, window = outstanding.pop(ar)
                    lost = False
                    try:
                        out, interrupted = ar.get(timeout=0)
                    except (ipp.error.EngineError, ipp.error.TaskAborted) as error:
                        # the engine died or the task was dropped
                        out, interrupted = Rows.empty(self.spec.schema), False
                        lost = isinstance(error, ipp.error.EngineError)
                        has_job.discard(engine)
                    except ipp.RemoteError as error:
                        if error.ename == "KeyboardInterrupt":
                            out, interrupted = Rows.empty(self.spec.schema), True
                        elif error.ename in ("EngineError", "TaskAborted"):
                            # The controller reports an engine's death as a remote error.
                            out, interrupted = Rows.empty(self.spec.schema), False
                            lost = error.ename == "EngineError"
                            has_job.discard(engine)
                        else:
                            raise
                    finally:
                        self._forget(ar)
                    vanished = [row for row, (etype, message, _) in out.errors.items()
                                if etype == "KeyError" and self.data_key in message]
                    last, times = resent.get(engine, (-math.inf, 0))
                    if vanished and (window.sent < last or times < RESEND_DATA):
                        # The engine let the data go since share: send it again (once for
                        # the chunks sent before); _settle requeues these rows as unrun.
                        if window.sent >= last:
                            self.cluster.share(writer.data, self.data_key, [engine])
                            resent[engine] = (clock(), times + 1)
                        out = out.without(vanished)
                    received = clock()
                    writer.record(out, engine, hosts.get(engine))
                    if len(out.rows):
                        writer.ran_chunk((engine, len(out.rows), window.sent, received,
                                              ar.started, ar.completed))
                    # Another sweep's cancel interrupts the engines it shares with this
                    # one: only this sweep's own cancel (or stop_on_error) drops rows.
                    self._settle(window, engine, out, interrupted and writer.stopping,
                                 planner, received, lost)
        except BaseException as error:
            writer.stop()
            self._cancel(outstanding)
            self.finish(error)
            raise
        finally:
            if board is not None:
                with contextlib.suppress(OSError):
                    os.unlink(board)
        # A cancel's SIGINT that lands late, on the release, fails no row of the sweep.
        with contextlib.suppress(Exception):
            self.cluster.release_working_memory(sorted(has_job))
        self._remember(planner)
        self.finish()

    def _settle(self, window: _Window, engine: int, out: worker.Rows, interrupted: bool,
                planner: ChunkPlanner, received: float, lost: bool = False) -> None:
        """One engine's part of ``window`` is back (``lost``: as an error, the engine
        died); once every part is, the planner learns the chunk's speed and gets back
        the rows no engine ran."""
        if lost:
            window.lost.add(engine)
            self._died.add(engine)
        window.waiting.discard(engine)
        window.ran.update(out.rows.tolist())
        window.seconds += float(out.seconds.sum())
        window.interrupted |= interrupted
        if window.waiting:
            return
        planner.done(window.target, len(window.ran), window.seconds / window.members, received)
        missing = [r for r in window.rows if r not in window.ran]
        if not missing or window.interrupted:
            return
        if not window.lost:
            planner.requeue(missing)
            return
        # An engine died running this chunk: one of its unrun points may have killed it.
        # They go out again one per task, so that a point that kills a second engine is
        # known, and is then a failed row instead of a third engine's death.
        for row in missing:
            self._kills[row] = self._kills.get(row, 0) + 1
        poisoned = [row for row in missing if self._kills[row] >= QUARANTINE_KILLS]
        again = [row for row in missing if self._kills[row] < QUARANTINE_KILLS]
        planner.requeue(again, alone=True)
        for dead in window.lost:
            self._requeued[dead] = self._requeued.get(dead, 0) + len(again)
        if poisoned:
            self._quarantine(poisoned, sorted(window.lost))

    def _quarantine(self, rows: list[int], engines: list[int]) -> None:
        """Rows whose point took down an engine each time it ran: failed, never run again."""
        out = RowsBuilder(self.spec.schema)
        message = (f"killed its engine {QUARANTINE_KILLS} times (the last: engine"
                   f" {', '.join(map(str, engines))}); the point exits or crashes the process"
                   " (os._exit, a segfault, the out-of-memory killer) and is not run again")
        for row in rows:
            out.failed(row, ("EngineKilled", message, f"EngineKilled: {message}\n"), math.nan)
        self.writer.record(out.build(), -1, None)

    def _lose(self, engine: int, groups: dict[int, list[int]], planner: ChunkPlanner,
              outstanding: dict[Any, tuple[int, _Window]]) -> None:
        """An engine left: its target loses it; what it had not run goes out again."""
        target = next((t for t, members in groups.items() if engine in members), None)
        if target is None:
            return
        groups[target].remove(engine)
        if not groups[target]:
            del groups[target]
            planner.remove_engine(target)
        self.cluster.forget_engine(engine)
        # Its chunks come back as errors and their rows are requeued then; what it
        # had not run of a shared chunk is run by the chunk's other engines or requeued
        # once they are back: either way other engines run it.
        mine = {window for e, window in outstanding.values() if e == engine or engine in window.lost}
        requeued = sum(len(w.rows) - len(w.ran) for w in mine) + self._requeued.pop(engine, 0)
        # Replaced only when it died working for this sweep: an engine killed before
        # (a stuck one, already replaced) that unregisters late is not this sweep's loss.
        worked = bool(mine) or engine in self._died
        replaced = worked and not self.writer.stopping and self.cluster.owned
        if replaced:
            # A cluster we started gets its engine back: in a thread, since starting
            # takes a moment, and the new engine takes work once it registers.
            self._replacing_until = time.monotonic() + REPLACE_WAIT
            threading.Thread(target=self._replace, name="nbbacktest-replace", daemon=True).start()
        self.writer.emit(EngineLost(engine=engine, requeued=requeued, replaced=replaced))

    def _replace(self) -> None:
        try:
            self.cluster.start_engines(1)
        except Exception:  # the sweep goes on with the engines it has
            self._replacing_until = -math.inf

    def _remember(self, planner: ChunkPlanner) -> None:
        # The next sweep of the same job on this cluster starts from these measurements.
        costs = [clock.cost * clock.members for clock in planner.engines.values() if clock.points]
        if costs:
            self.timing.point_seconds[self.cost_key] = sum(costs) / len(costs)
        self.timing.round_trips.update(planner.round_trips)
        self.timing.task_gap = planner.task_gap

    def _report_slow(self, outstanding: dict[Any, tuple[int, _Window]]) -> None:
        # Engines publish a point that runs past warn_after into the task's metadata.
        metadata = self.client.metadata
        for ar, (engine, _window) in list(outstanding.items()):
            published = metadata.get(ar.msg_ids[0], {}).get("data")
            if published and worker.SLOW_KEY in published:
                row, seconds = published[worker.SLOW_KEY]
                self.writer.slow(row, seconds, engine)

    def _controller_url(self) -> str:
        return str(getattr(self.client, "_config", {}).get("registration", "the controller"))

    def _controller_answers(self) -> bool:
        """False only when the controller's registration port refuses a connection."""
        url = self._controller_url()
        if not url.startswith("tcp://"):
            return True  # another transport: nothing to probe
        host, _, port = url[len("tcp://"):].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except ConnectionRefusedError:
            return False
        except (OSError, ValueError):
            return True  # slow or unreachable for a moment is not proof of death

    def _cancel(self, outstanding: dict[Any, tuple[int, _Window]]) -> None:
        """Drop queued tasks, interrupt running ones, and collect the rows they finished."""
        if not outstanding or self._controller_lost:
            outstanding.clear()
            return
        client = self.client
        busy = sorted({engine for engine, _ in outstanding.values()} & set(client.ids))
        try:
            client.abort(jobs=list(outstanding), targets=busy, block=False)
            client.send_signal(signal.SIGINT, targets=busy, block=False)
        except Exception:
            pass
        deadline = time.monotonic() + CANCEL_WAIT
        while outstanding and time.monotonic() < deadline:
            finished, _ = concurrent.futures.wait(list(outstanding), timeout=0.1)
            for ar in finished:
                ar = cast(Any, ar)  # an ipyparallel AsyncResult
                engine, _window = outstanding.pop(ar)
                try:
                    out, _ = ar.get(timeout=0)
                    self.writer.record(out, engine, self.cluster._hosts.get(engine))
                except Exception:
                    pass
                finally:
                    self._forget(ar)
        stuck: dict[int, list[Any]] = {}
        for ar, (engine, _window) in outstanding.items():
            if not ar.done():
                stuck.setdefault(engine, []).append(ar)
        outstanding.clear()
        if stuck:
            self._unstick(self._busy(stuck))

    def _busy(self, late: dict[int, list[Any]]) -> dict[int, list[Any]]:
        """Of the engines whose tasks did not come back, those still running a point.

        A SIGINT that reaches an engine between two tasks can cost a task's reply
        while the engine itself is idle: such an engine answers a trivial task at
        once, where one still running a point cannot (it runs one task at a time).
        """
        ids = set(self.client.ids)
        probes = {engine: self.client[engine].apply_async(os.getpid) for engine in late if engine in ids}
        concurrent.futures.wait(list(probes.values()), timeout=PROBE_WAIT)
        busy = {}
        for engine, tasks in late.items():
            probe = probes.get(engine)
            if probe is not None and probe.done():
                self.cluster.replies_lost(tasks)
                for task in [*tasks, probe]:
                    self._forget(task)
            elif probe is not None:
                busy[engine] = [*tasks, probe]
        return busy

    def _unstick(self, stuck: dict[int, list[Any]]) -> None:
        """Engines whose points did not stop within CANCEL_WAIT of the interrupt (a point
        in one long C call, or one that catches KeyboardInterrupt and goes on).

        An engine of a cluster nbbacktest started is killed and a new one started; on
        a cluster connected to, it is left out of later sweeps until its task ends.
        """
        pids = self.cluster.pids if self.cluster.owned else {}
        killed = []
        for engine, tasks in stuck.items():
            pid = pids.get(engine)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(engine)
                _KILLED.setdefault(self.cluster, set()).add(engine)
                threading.Thread(target=self.cluster.start_engines, args=(1,),
                                 name="nbbacktest-replace", daemon=True).start()
            else:
                _STUCK.setdefault(self.cluster, {})[engine] = tasks
        # Until the controller sees them gone, the next sweep would still count on them.
        deadline = time.monotonic() + UNREGISTER_WAIT
        while set(killed) & set(self.client.ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for engine in killed:
            self.cluster.forget_engine(engine)

    def _forget(self, ar: Any) -> None:
        # The client caches every result and its metadata; drop them so a sweep of
        # 100,000 points keeps only its own rows.
        try:
            self.client.purge_local_results(jobs=ar)
        except Exception:
            pass

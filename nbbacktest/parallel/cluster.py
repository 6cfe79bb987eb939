"""The ipyparallel cluster sweeps run on: started here, or connected to one started elsewhere.

One cluster is *current* at a time and is reused by every sweep and every cell
until it is stopped. The cluster also owns the market data it was given: each
distinct frame (by fingerprint) is written once into a shared-memory segment on
the client's host and attached zero-copy by the engines there; each other host
receives one copy, written into its own segment by one of its engines.

Several clients (notebooks) may share one cluster. An engine keeps a data set while
some client leases it: each share renews the client's lease, a client that stops
gives its leases up, and the lease of a client that died lapses
(``worker.LEASE_SECONDS``). Of the data no sweep is using, an engine keeps the most
recently used within ``worker.IDLE_KEPT`` and ``worker.IDLE_BYTES``; a share finds
what an engine let go and sends it again. A cluster started here has a watchdog
process that ends it when this process is gone
(:data:`~nbbacktest.parallel.cluster_processes.ORPHAN_SECONDS`).

Below it: :mod:`~nbbacktest.parallel.cluster_sizing` (how many engines),
:mod:`~nbbacktest.parallel.cluster_processes` (reaping, the watchdog) and
:mod:`~nbbacktest.parallel.engine_calls` (asking engines, telling the silent ones).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from nbbacktest.errors import ClusterError, NbbacktestWarning
from nbbacktest.parallel import worker
from nbbacktest.parallel.cluster_processes import end_watchdog, launched_processes, reap, start_watchdog
from nbbacktest.parallel.cluster_sizing import check_local_engines, resolve_engine_count
from nbbacktest.parallel.engine_calls import ENGINE_ANSWER_SECONDS, EngineCalls, process_halted

if TYPE_CHECKING:
    import ipyparallel as ipp
    import pandas as pd

    from nbbacktest.parallel.shared import Segment

__all__ = [
    "SHARE_TIMEOUT",
    "Cluster",
    "current_or_start",
    # defined below this module, used here, and imported from here by the sweep, the magics,
    # the widget and their tests: resolve_engine_count; by tests/test_browser.py: reap
    "reap",
    "resolve_engine_count",
]

#: Seconds a share waits at most, for engines busy with other work and for data sent to
#: another host (a 1 GiB frame took 14-18 s).
SHARE_TIMEOUT = 600.0
#: Seconds a sweep's end waits for its engines to free their working memory (ms when idle).
RELEASE_TIMEOUT = 2.0


class Cluster:
    """A running ipyparallel cluster and the data it holds.

    ``Cluster(engines=N)`` starts a local cluster (controller without a task
    database, so it keeps no task data); :meth:`connect` attaches to one started
    elsewhere. The newest cluster becomes current and is reused by sweeps. Use it
    as a context manager, or call :meth:`stop`; a cluster started here is also
    stopped when the interpreter exits, and ends itself within
    :data:`~nbbacktest.parallel.cluster_processes.ORPHAN_SECONDS` when this process is
    killed (a small watchdog process looks after it).

    Parameters
    ----------
    engines : int or "auto"
        Engines to start: N, -1 for every core, "auto" for every core that memory allows.
    profile : str, optional
        IPython profile to start the cluster in.
    timeout : float
        Seconds to wait for the engines to register.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> with nbb.Cluster(engines=2) as cluster:   # doctest: +SKIP
    ...     print(cluster.status()["engines"])
    2
    """

    _current: ClassVar[Cluster | None] = None
    _watchdog: subprocess.Popen[bytes] | None

    def __init__(
        self,
        engines: int | str = 2,
        *,
        profile: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        import ipyparallel as ipp

        n = check_local_engines(resolve_engine_count(engines))
        _check_timeout(timeout)
        # ERROR: engines exit with code 1 at stop() and ipyparallel logs their whole
        # output as a warning, which would land in the user's notebook.
        kwargs: dict[str, Any] = {"n": n, "controller_args": ["--nodb"], "log_level": logging.ERROR}
        if profile is not None:
            kwargs["profile"] = profile
        self._ipp_cluster: ipp.Cluster | None = ipp.Cluster(**kwargs)
        # Started first, so that no moment leaves the processes without one.
        watchdog = start_watchdog(self._ipp_cluster.cluster_id, self._ipp_cluster.profile_dir)
        try:
            client = self._ipp_cluster.start_and_connect_sync(n=n)
        except Exception as error:
            self._ipp_cluster = None
            end_watchdog(watchdog)
            raise ClusterError(f"could not start a local cluster of {n} engines: {error}") from error
        self._setup(client, owned=True)
        self._watchdog = watchdog
        self._wait_for(n, timeout)

    @classmethod
    def connect(
        cls,
        profile: str | None = None,
        cluster_id: str | None = None,
        url_file: str | None = None,
        *,
        client: ipp.Client | None = None,
        engines: int = 1,
        timeout: float = 30.0,
    ) -> Cluster:
        """Attach to a cluster started elsewhere (``ipcluster start``) or an existing Client.

        The cluster is not stopped by :meth:`stop` (only disconnected from), so
        a cluster shared by several notebooks keeps running.

        Parameters
        ----------
        profile, cluster_id : str, optional
            Which cluster, as given to ``ipcluster start --profile P --cluster-id ID``.
        url_file : str, optional
            Path of the controller's ``ipcontroller-client.json``.
        client : ipyparallel.Client, optional
            An already connected client.
        engines : int
            Wait until at least this many engines are registered.
        timeout : float
            Seconds to wait for the controller and the engines.

        Notes
        -----
        Many hosts work through ipyparallel's own launchers, with no code change:

        * SSH: ``ipcluster start -n 16 --engines=ssh`` with
          ``c.SSHEngineSetLauncher.engines = {"host1": 8, "host2": 8}`` in
          ``ipcluster_config.py``.
        * MPI: ``ipcluster start -n 64 --engines=mpi``.
        * Slurm: ``ipcluster start -n 128 --engines=slurm --controller=slurm``
          (set ``c.SlurmEngineSetLauncher.batch_template`` for partitions and time).

        Then ``nbb.Cluster.connect(profile=...)``; engines on other hosts receive
        one copy of the data per host.

        Examples
        --------
        >>> cluster = nbb.Cluster.connect(profile="research")   # doctest: +SKIP
        """
        import ipyparallel as ipp

        _check_timeout(timeout)
        if client is not None and not isinstance(client, ipp.Client):
            raise TypeError(f"client must be an ipyparallel.Client, got {type(client).__name__}")
        if client is None:
            kwargs = {"profile": profile, "cluster_id": cluster_id}
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            if url_file is not None and not os.path.exists(url_file):
                raise ClusterError(
                    f"no cluster to connect to: url_file {url_file!r} does not exist. Start one"
                    " with `ipcluster start -n 4` or nbb.Cluster(engines=4)"
                )
            try:
                # ipyparallel 9 takes the connection file as its first argument.
                client = ipp.Client(url_file, timeout=timeout, **kwargs)
            except Exception as error:
                where = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "the default profile"
                # First line only: ipyparallel's message goes on with a long hint of its own.
                reason = str(error).splitlines()[0].rstrip(".") if str(error) else type(error).__name__
                raise ClusterError(
                    f"no cluster to connect to ({where}): {reason}. Start one with"
                    " `ipcluster start -n 4` or nbb.Cluster(engines=4)"
                ) from error
        self = cls.__new__(cls)
        self._ipp_cluster = None
        self._setup(client, owned=False)
        self._wait_for(engines, timeout)
        return self

    def _setup(self, client: ipp.Client, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.host = worker.host_name()
        self._lock = threading.RLock()
        self._hosts: dict[int, str] = {}
        self._pids: dict[int, int] = {}
        self._engine_data: dict[int, set[str]] = {}
        self._segments: dict[str, Segment] = {}
        self._data_sent: dict[str, int] = {}
        #: Tasks an engine ran whose reply never came (see replies_lost).
        self._lost_replies: set[str] = set()
        # Engines keep data while some connected client leases it (see worker.lease_data):
        # this client's id there, and the keys it leases.
        self.lease_id = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._leased: set[str] = set()
        # Through a weak reference, like the exit hook below: no cycle keeps the cluster alive.
        halted = weakref.WeakMethod(self._halted)
        self._calls = EngineCalls(
            client, halted=lambda engine: (method := halted()) is not None and method(engine)
        )
        self._watchdog = None
        self._stopped = False
        Cluster._current = self
        reference = weakref.ref(self)

        def stop_at_exit() -> None:
            cluster = reference()
            if cluster is not None:
                cluster.stop()

        atexit.register(stop_at_exit)

    def _wait_for(self, n: int, timeout: float) -> None:
        try:
            self.client.wait_for_engines(n, timeout=timeout, block=True)
        except Exception as error:
            ready = len(self.client.ids)
            self.stop()
            raise ClusterError(
                f"{n} engine(s) not ready in {timeout:g} seconds. Currently ready: {ready}"
            ) from error

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def current(cls) -> Cluster | None:
        """The running cluster sweeps reuse, if any."""
        cluster = cls._current
        if cluster is not None and cluster._stopped:
            cls._current = None
            return None
        return cluster

    @property
    def running(self) -> bool:
        """False once stopped."""
        return not self._stopped

    @property
    def ids(self) -> list[int]:
        """Ids of the engines registered now."""
        return list(self.client.ids)

    @property
    def pids(self) -> dict[int, int]:
        """Process id of each engine (for tests and diagnostics)."""
        self.refresh_hosts()
        return dict(self._pids)

    @property
    def connection_file(self) -> str | None:
        """The controller's client connection file, for ``Cluster.connect(url_file=...)``."""
        if self._ipp_cluster is not None:
            cluster = self._ipp_cluster
            return os.path.join(
                cluster.profile_dir, "security", f"ipcontroller-{cluster.cluster_id}-client.json"
            )
        return None

    def process_ids(self) -> list[int]:
        """Controller, engine and nanny processes this cluster started (empty if connected)."""
        return [process.pid for process in self._processes()]

    def _processes(self) -> list[Any]:
        return [] if self._ipp_cluster is None else launched_processes(self._ipp_cluster)

    def segment_paths(self) -> list[str]:
        """Shared-memory files this cluster wrote on this host."""
        return [str(segment.path) for segment in self._segments.values()]

    def stop(self) -> None:
        """Stop the cluster if it was started here (else disconnect) and free its data.

        Idempotent. Shared-memory segments written by this process are removed.
        """
        if self._stopped:
            return
        self._stopped = True
        if Cluster._current is self:
            Cluster._current = None
        for segment in self._segments.values():
            segment.unlink()
        self._segments.clear()
        if self._leased:
            # Engines drop the data no other connected client leases and unlink the
            # segments they wrote on other hosts; the leases of a client that cannot
            # say so (killed, or its engines hung) lapse after worker.LEASE_SECONDS.
            try:
                self._calls.ask(self.client.ids, 10.0, worker.release_data, sorted(self._leased),
                                self.lease_id)
            except Exception:
                pass
        try:
            self.client.close()
        except Exception:
            pass
        if self._ipp_cluster is not None:
            processes = self._processes()
            try:
                self._ipp_cluster.stop_cluster_sync()
            except Exception:
                pass
            # stop_cluster_sync signals the processes; make sure none outlives stop().
            reap(processes, timeout=10)
            self._ipp_cluster = None
        end_watchdog(self._watchdog)
        self._watchdog = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"{len(self.client.ids)} engines"
        kind = "local" if self.owned else "connected"
        return f"<nbbacktest.Cluster {kind}, {state}>"

    def check_running(self) -> None:
        """Raise ClusterError when stopped or without engines."""
        if self._stopped:
            raise ClusterError("the cluster is stopped: start one with nbb.Cluster(engines=N)")
        if not self.client.ids:
            raise ClusterError("the cluster has no engines registered (0 ready)")

    # ----------------------------------------------------------------- hosts
    def refresh_hosts(self, ids: Iterable[int] | None = None) -> dict[int, str]:
        """Ask engines we do not know yet for their host; returns engine -> host.

        An engine that does not answer (see :data:`ENGINE_ANSWER_SECONDS`) is left out.
        """
        with self._lock:
            wanted = [e for e in (self.client.ids if ids is None else ids) if e not in self._hosts]
            if wanted:
                infos, _ = self._calls.ask(wanted, SHARE_TIMEOUT, worker.engine_info)
                for engine, info in infos.items():
                    self._hosts[engine] = info["host"]
                    self._pids[engine] = info["pid"]
                    self._engine_data[engine] = set(info["data"])
            return {e: self._hosts[e] for e in self.client.ids if e in self._hosts}

    def _halted(self, engine: int) -> bool:
        """Whether ``engine`` is a process of this host stopped by a signal (SIGSTOP, a
        debugger): then the tasks queued on it are not work in progress."""
        pid = self._pids.get(engine)
        if pid is None or self._hosts.get(engine) != self.host:
            return False
        return process_halted(pid)

    # ------------------------------------------------------------------ data
    def share(self, data: pd.DataFrame | dict[str, pd.DataFrame], key: str,
              ids: Iterable[int] | None = None) -> int:
        """Make validated ``data`` available under ``key`` on the engines ``ids`` (default: all).

        Every engine is asked whether it still holds ``key`` (another client's data, a
        lapsed lease or an engine's budget may have gone since), and this client's lease
        on it is renewed; only the engines that lack it get it. An engine that does not
        answer within :data:`ENGINE_ANSWER_SECONDS` while it has nothing else to do is
        left out with a warning; :meth:`holds` then omits it.

        Parameters
        ----------
        data : pandas.DataFrame or dict of str to pandas.DataFrame
            A validated frame or universe (see :func:`nbbacktest.load_ohlcv`).
        key : str
            Its :func:`~nbbacktest.parallel.fingerprint.fingerprint`.
        ids : iterable of int, optional
            The engines that need it.

        Returns
        -------
        int
            Bytes sent over the network: 0 when every engine shares this host's segment.

        Raises
        ------
        ClusterError
            The cluster is stopped, or none of the engines answered.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.parallel.fingerprint import fingerprint
        >>> data = nbb.load_sample("daily")
        >>> cluster.share(data, fingerprint(data))   # doctest: +SKIP
        0
        >>> cluster.holds(fingerprint(data)) == cluster.ids   # doctest: +SKIP
        True
        """
        from nbbacktest.parallel.segment_files import remote_segment_name
        from nbbacktest.parallel.segment_layout import layout_of
        from nbbacktest.parallel.shared import Segment

        self.check_running()
        with self._lock:
            registered = set(self.client.ids)
            wanted = [e for e in (sorted(registered) if ids is None else ids) if e in registered]
            held, silent = self._calls.ask(wanted, SHARE_TIMEOUT, worker.lease_data, key, self.lease_id)
            if wanted and not held:
                raise ClusterError(
                    f"none of the engines {_engines(silent)} answered in {ENGINE_ANSWER_SECONDS:g} seconds:"
                    " they are stopped (SIGSTOP), hung or swapping. Resume them (`kill -CONT <pid>`)"
                    " or start a new cluster: nbb.Cluster.current().stop(); nbb.Cluster(engines=4)"
                )
            self._leave_out(silent, key)
            self._leased.add(key)
            hosts = self.refresh_hosts(list(held))
            for engine, holds in held.items():
                keys = self._engine_data.setdefault(engine, set())
                if holds:
                    keys.add(key)
                else:
                    keys.discard(key)
            missing = [e for e, has in held.items() if not has and e in hosts]
            if not missing:
                return 0
            sent = 0
            by_host: dict[str, list[int]] = {}
            for engine in missing:
                by_host.setdefault(hosts[engine], []).append(engine)
            attaching: list[tuple[list[int], str, Any]] = []
            local = by_host.pop(self.host, [])
            if local:
                segment = self._segments.get(key)
                # Another client of this process may have removed the file the segment
                # names (one Segment per process and key): then it is written again.
                if segment is None or not segment.path.exists():
                    segment = self._segments[key] = Segment.create(data, key)
                attaching.append((local, str(segment.path), segment.layout))
            if by_host:
                layout, arrays = layout_of(data)
                nbytes = sum(a.nbytes for a in arrays)
                path = remote_segment_name(key)
                for engines in by_host.values():
                    # One engine per host receives the arrays and writes its host's
                    # segment; the others attach that segment once it exists.
                    first, rest = engines[0], engines[1:]
                    self.client[first].apply_async(
                        worker.receive_data, key, path, layout, *arrays, client=self.lease_id
                    ).get(timeout=SHARE_TIMEOUT)
                    sent += nbytes
                    self._engine_data.setdefault(first, set()).add(key)
                    if rest:
                        attaching.append((rest, path, layout))
            for engines, path, layout in attaching:
                attached, silent = self._calls.ask(engines, SHARE_TIMEOUT, worker.attach_data, key, path,
                                                   layout, self.lease_id)
                self._leave_out(silent, key)
                for engine in attached:
                    self._engine_data.setdefault(engine, set()).add(key)
            self._data_sent[key] = self._data_sent.get(key, 0) + sent
            return sent

    def _leave_out(self, silent: list[int], key: str) -> None:
        """Warn that ``silent`` engines did not answer; they do not hold ``key`` for us."""
        if not silent:
            return
        for engine in silent:
            self._engine_data.get(engine, set()).discard(key)
        gone = [e for e in silent if e not in self.client.ids]
        for engine in gone:
            self.forget_engine(engine)
        stuck = [e for e in silent if e not in gone]
        if stuck:
            pids = ", ".join(f"{e} (pid {self._pids[e]})" if e in self._pids else str(e) for e in stuck)
            warnings.warn(
                f"engine(s) {pids} did not answer in {ENGINE_ANSWER_SECONDS:g} seconds and are left out:"
                " they are stopped (SIGSTOP), hung or swapping. Sweeps run on the engines that answered;"
                " resume them with `kill -CONT <pid>`, or start a new cluster",
                NbbacktestWarning, stacklevel=3,
            )

    def holds(self, key: str) -> list[int]:
        """Engines that hold the data under ``key``."""
        return [e for e, keys in self._engine_data.items() if key in keys and e in self.client.ids]

    def start_engines(self, n: int = 1) -> bool:
        """Start ``n`` more engines, without waiting for them to register; False when
        this cluster was connected to (its engines are another's to start).

        A sweep replaces the engines it lost this way; they take work once they register.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> with nbb.Cluster(engines=1) as cluster:   # doctest: +SKIP
        ...     cluster.start_engines(1)
        True
        """
        if self._ipp_cluster is None:
            return False
        self._ipp_cluster.start_engines_sync(n=n)
        return True

    def forget_engine(self, engine: int) -> None:
        """Drop what we know of an engine that left."""
        with self._lock:
            self._hosts.pop(engine, None)
            self._engine_data.pop(engine, None)

    def release_working_memory(self, engines: Iterable[int]) -> list[int]:
        """At a sweep's end, ``engines`` run :func:`.worker.release_working_memory`; returns
        those that had not within :data:`RELEASE_TIMEOUT` (busy: they do it later)."""
        ids = [e for e in engines if e in self.client.ids]
        return self._calls.ask(ids, RELEASE_TIMEOUT, worker.release_working_memory, True)[1]

    def replies_lost(self, tasks: Iterable[Any]) -> None:
        """Tasks whose engine is idle but whose reply never came.

        An interrupt that reaches an engine between two tasks can cost a reply; the
        controller then counts the task as queued on that engine for ever, and
        ``status()`` would read the idle engine as busy.
        """
        with self._lock:
            for task in tasks:
                self._lost_replies.update(task.msg_ids)

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Engines, hosts, busy/idle and data held, as a dict.

        Examples
        --------
        >>> cluster.status()["engines"]   # doctest: +SKIP
        2
        """
        if self._stopped:
            return {"running": False, "engines": 0, "hosts": {}, "busy": 0, "idle": 0, "data": {}}
        hosts = self.refresh_hosts()
        # The controller hears of a finished task after this client has its answer
        # (refresh_hosts' own question, just answered, read as "1 busy"): a task
        # whose answer we hold is not work in progress.
        queue = self.client.queue_status(verbose=True)
        answered = (set(self.client.history) - set(self.client.outstanding)) | self._lost_replies

        def working(engine: int) -> bool:
            counts = queue.get(engine, {})
            return any(m not in answered for k in ("queue", "tasks") for m in counts.get(k, []))

        busy = sum(1 for e in hosts if working(e))
        per_host: dict[str, int] = {}
        for host in hosts.values():
            per_host[host] = per_host.get(host, 0) + 1
        data = {
            key: {"bytes": segment.nbytes, "engines": len(self.holds(key))}
            for key, segment in self._segments.items()
        }
        for key in self._data_sent:
            data.setdefault(key, {"bytes": 0, "engines": len(self.holds(key))})
        return {
            "running": True,
            "kind": "local" if self.owned else "connected",
            "engines": len(hosts),
            "hosts": per_host,
            "busy": busy,
            "idle": len(hosts) - busy,
            "data": data,
        }


def _engines(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "(none registered)"


def _check_timeout(timeout: Any) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def current_or_start(engines: int | str, data_bytes: int = 0) -> Cluster:
    """The current cluster, or a new local one of ``engines`` engines."""
    cluster = Cluster.current()
    if cluster is not None:
        cluster.check_running()
        return cluster
    return Cluster(engines=resolve_engine_count(engines, data_bytes))



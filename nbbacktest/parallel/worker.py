"""What runs on the engines (and in-process): data attach, job cache, run a chunk.

Everything an engine keeps lives in this module's globals: the attached data by
fingerprint, the prepared numpy views per symbol, and recent jobs (strategy classes
plus settings). Tasks carry keys into these caches, never the data itself, and the
in-process path runs exactly the same :func:`run_points`, so a point computes the
same bits wherever it runs.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import socket
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbbacktest.engine.backtest import PreparedData, RunSeeds, Settings, simulate_stats
from nbbacktest.engine.caches import release_scratch
from nbbacktest.engine.portfolio import PortfolioStrategy
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import StrategyError
from nbbacktest.parallel.rows import ErrorInfo, Rows, RowsBuilder, StatSchema
from nbbacktest.parallel.run_returns import ReturnsCollector, ReturnsPlan

try:
    import fcntl
except ImportError:  # Windows: engines do not share windows
    fcntl = None  # type: ignore[assignment]

#: Environment variable that overrides the host name an engine reports, so a test
#: can make engines on this machine take the code path of another host.
HOST_ENV = "NBBACKTEST_HOSTNAME"

_DATA: dict[str, Any] = {}
_WRITTEN: dict[str, str] = {}  # data key -> segment this engine wrote for its host
_PREPARED: dict[tuple[str, str | None], PreparedData] = {}
_JOBS: OrderedDict[str, Job] = OrderedDict()
_JOBS_KEPT = 8


@dataclass(frozen=True)
class Job:
    """What every point of one sweep shares: classes, param names, settings, data key."""

    classes: tuple[type[Strategy], ...]
    names: tuple[tuple[str, ...], ...]
    settings: Settings
    data_key: str
    #: A point running longer than this many seconds is reported (see :func:`watch`).
    warn_after: float = 3600.0
    #: Stop the chunk at its first failing point (the sweep then stops too).
    stop_on_error: bool = False
    #: The sweep's seed; a point's own seed is derived from it where the point runs.
    seed: int = 0
    #: The stats each point gives and how its rows keep them (the client's, so that
    #: both ends agree on the columns).
    schema: StatSchema = field(default_factory=StatSchema.current)
    #: symbol -> the bar its runs trade from (``SweepSpec.trade_starts``).
    trade_starts: dict[str, int] = field(default_factory=dict)
    #: Which runs send their returns back, on which periods (``SweepSpec.returns``).
    returns: ReturnsPlan | None = None


def host_name() -> str:
    """This process's host as nbbacktest sees it (``NBBACKTEST_HOSTNAME`` overrides)."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def engine_info() -> dict[str, Any]:
    """Host, pid and data keys held: what the client asks a new engine."""
    return {"host": host_name(), "pid": os.getpid(), "data": sorted(_DATA)}


#: A client's lease on data lapses this many seconds after the client last shared it
#: and a point last read it: then the data of a client that died without releasing it
#: goes. Long enough for a notebook left idle for an hour to find its data still there
#: (sending a frame to another host again costs ~15 s per GiB); a client whose lease
#: lapsed gets its data sent again by its next sweep.
LEASE_SECONDS = 2 * 3600.0
#: Data shared or read this recently is in use, a running sweep's, and never dropped to
#: keep within the budget below: a chunk lasts about a second, so a minute covers the
#: gaps between one sweep's chunks with room to spare.
IN_USE_SECONDS = 60.0
#: Bytes (by segment size) of data no longer in use that an engine keeps at most, least
#: recently used dropped first: four 5M-bar frames had left ~860 MB in each engine.
IDLE_BYTES = 512 * 2**20
#: Data sets no longer in use that an engine keeps at most: a notebook goes back and
#: forth between a few, and attaching one again on the client's host takes milliseconds.
IDLE_KEPT = 3


@dataclass
class _Held:
    """What an engine knows of data a client gave it (:func:`attach_data`, :func:`receive_data`)."""

    nbytes: int
    path: str  #: the segment it is attached from, unmapped when the data goes
    used: float  #: time.monotonic() when it was last shared or read
    leases: dict[str, float] = field(default_factory=dict)  #: client id -> time of its last lease


_HELD: dict[str, _Held] = {}


def hold_data(key: str, data: Any) -> None:
    """Keep a frame or universe under ``key`` (in-process path: no copy)."""
    if key not in _DATA:
        _DATA[key] = data


def _resolve(path: str) -> str:
    # A bare file name lives in this host's segment directory.
    if os.path.isabs(path):
        return path
    from nbbacktest.parallel.segment_files import segment_dir

    return str(segment_dir() / path)


def attach_data(key: str, path: str, layout: Any, client: str = "") -> str:
    """Attach a shared-memory segment of this host under ``key`` for ``client``; returns the host."""
    if key not in _DATA:
        from nbbacktest.parallel.shared import attach

        full = _resolve(path)
        _DATA[key] = attach(full, layout)
        _HELD[key] = _Held(layout.nbytes, full, time.monotonic())
    lease_data(key, client)
    return host_name()


def lease_data(key: str, client: str = "") -> bool:
    """Renew ``client``'s lease on the data under ``key``: False when this engine lacks it.

    Then drops the data whose every lease lapsed (:data:`LEASE_SECONDS`) and the least
    recently used data not in use beyond :data:`IDLE_KEPT` and :data:`IDLE_BYTES`.
    """
    now = time.monotonic()
    held = _HELD.get(key)
    if held is not None:
        held.used = held.leases[client] = now
    _collect(now)
    return key in _DATA


def _leased(held: _Held, now: float) -> bool:
    # Reading the data renews every lease on it: a sweep that runs for longer than
    # LEASE_SECONDS keeps its data.
    return any(now - max(renewed, held.used) < LEASE_SECONDS for renewed in held.leases.values())


def _collect(now: float) -> None:
    lapsed = [key for key, held in _HELD.items() if not _leased(held, now)]
    idle = sorted((key for key, held in _HELD.items()
                   if now - held.used >= IN_USE_SECONDS and key not in lapsed),
                  key=lambda key: _HELD[key].used, reverse=True)
    kept = 0
    for count, key in enumerate(idle):
        kept += _HELD[key].nbytes
        if count >= IDLE_KEPT or kept > IDLE_BYTES:
            lapsed.extend(idle[count:])
            break
    if lapsed:
        release_data(lapsed)


def receive_data(key: str, path: str, layout: Any, *arrays: Any, client: str = "") -> str:
    """On another host: write the arrays into this host's segment once, then attach."""
    from nbbacktest.parallel.segment_files import write_segment

    if key not in _DATA:
        full = _resolve(path)
        if not os.path.exists(full):
            write_segment(layout, list(arrays), full)
            _WRITTEN[key] = full
        attach_data(key, full, layout, client)
    else:
        lease_data(key, client)
    return host_name()


def release_data(keys: list[str] | None = None, client: str | None = None) -> list[str]:
    """Forget attached data (all when ``keys`` is None) and unlink segments written here.

    With ``client``, only that client's leases go: data another client still leases stays.
    """
    dropped = list(_DATA) if keys is None else [k for k in keys if k in _DATA]
    if client is not None:
        now = time.monotonic()
        for key in dropped:
            if key in _HELD:
                _HELD[key].leases.pop(client, None)
        dropped = [k for k in dropped if k in _HELD and not _leased(_HELD[k], now)]
    for key in dropped:
        _DATA.pop(key, None)
        held = _HELD.pop(key, None)
        if held is not None:
            from nbbacktest.parallel.shared import detach

            detach(held.path)  # the mapping kept the segment's memory alive
        written = _WRITTEN.pop(key, None)
        if written is not None:
            try:
                os.unlink(written)
            except OSError:
                pass
    for prepared_key in [k for k in _PREPARED if k[0] in dropped]:
        del _PREPARED[prepared_key]
    return dropped


def prepared(data_key: str, symbol: str | None, start: int = 0) -> PreparedData:
    """Numpy views of one frame of the data under ``data_key``, built once; ``start``:
    the bar its runs trade from (see ``PreparedData.trading_from``)."""
    key = (data_key, symbol)
    if data_key in _HELD:
        _HELD[data_key].used = time.monotonic()  # in use: kept, and its leases renewed
    found = _PREPARED.get(key)
    if found is None:
        data = _DATA[data_key]
        frame = data if symbol is None else data[symbol]
        found = _PREPARED[key] = PreparedData.from_frame(frame)
    return found.trading_from(start) if start else found


def portfolio_stats(
    strategy: PortfolioStrategy, data_key: str, settings: Settings, seed: int
) -> dict[str, Any]:
    """The stats of one portfolio run over the universe held under ``data_key`` (no copy of it)."""
    from nbbacktest.engine.portfolio_sim import simulate_portfolio  # loads numba

    if data_key in _HELD:
        _HELD[data_key].used = time.monotonic()
    universe = _DATA[data_key]
    return simulate_portfolio(strategy, universe, settings, seed, private=True, keep_held=False).stats


def release_working_memory(collect: bool = False) -> None:
    """After a sweep: drop what its runs derived from the data, and give the heap back.

    The runners call it when a sweep ends (on each engine that took part, and in
    this process), not after each chunk: the next chunk of the same sweep reuses
    what the last one built and freed (rebuilding it, and faulting the heap's pages
    in again, cost ~4 ms a point on a 50-symbol portfolio in chunks of a few
    points). An engine between sweeps then holds, of a data set, only the shared
    mapping (and the strategies' bounded indicator memo): no per-data arrays (the
    buy & hold prices, the scratch row) that would grow with the data and stay
    for as long as the engine lives.
    """
    for data in _PREPARED.values():
        data.release_derived()  # the data itself stays: self.I's memo lives as long as it does
    release_scratch()
    if collect:  # an engine: cyclic garbage the runs left would pin heap pages (not in a
        gc.collect()  # user's kernel, where a full collection can take a second)
    release_freed_memory()


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``), after a chunk.

    A portfolio run allocates and frees several arrays of the universe's size (its
    scores, weights, the frames the strategy computes), which stay in the heap while
    a sweep runs (:func:`keep_freed_memory_in_sweeps`): about 4 MiB an engine on a
    5 MiB universe. Trimming costs well under a millisecond. A no-op where the C
    library has no ``malloc_trim``.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


#: glibc's mallopt parameters, and the values set: those glibc's own adaptive
#: thresholds reach at most (a block up to 32 MiB from the heap, a free top of the
#: heap up to twice that kept).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD


@functools.cache
def keep_freed_memory_in_sweeps() -> bool:
    """Let the arrays a run frees serve the next run, instead of going back to the system.

    glibc's adaptive thresholds follow the largest block freed so far: after runs
    whose arrays are ~1 MiB, a block over 1 MiB is mapped afresh, and a free top of
    the heap over 2 MiB is given back at once. A run's temporaries exceed that, so
    every run of a chunk paid the page faults of memory the run before had just
    returned: 15.7 ms a point on an engine against 11.5 ms in a process whose
    thresholds had already grown (a 50-symbol portfolio). Set here, once a process,
    to the values the adaptive thresholds reach at most; the memory still goes back
    when the sweep ends (:func:`release_working_memory`). Returns whether it was set
    (False where the C library is not glibc).
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@functools.cache
def _libc() -> Any:
    """glibc, where ``malloc_trim`` is found; None elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc has it, other C libraries not
        return libc
    except (OSError, AttributeError):
        return None


def register_job(key: str, job: Job | bytes) -> Job:
    """Cache a job under ``key`` (bytes are a cloudpickle of the Job)."""
    found = _JOBS.get(key)
    if found is not None:
        _JOBS.move_to_end(key)  # in use: the least recently used job goes first, not the oldest
    else:
        if isinstance(job, bytes):
            import cloudpickle

            job = cloudpickle.loads(job)
        found = _JOBS[key] = job  # type: ignore[assignment]
        while len(_JOBS) > _JOBS_KEPT:
            _JOBS.popitem(last=False)
    return found  # type: ignore[return-value]


#: One point of a task: (row, class index, param values, symbol).
PointSpec = tuple[int, int, tuple, "str | None"]


#: A window shared by the engines of one host: (claim file, slot, engines sharing it).
Shared = tuple[str, int, int]


def run_points(
    job_key: str, job: Job | bytes | None, points: list[PointSpec], shared: Shared | None = None
) -> tuple[Rows, bool]:
    """Run points of a job; returns their rows and whether it was interrupted.

    A point whose strategy raises gives a row with the error and the traceback of
    the user's code; the next point runs (unless the job has ``stop_on_error``).
    KeyboardInterrupt (cancel) stops the chunk and keeps the rows already finished.

    With ``shared``, every engine of a host gets the same ``points`` (a window) and
    each runs the blocks it claims from the window's counter in the claim file (see
    :class:`ClaimBoard`), until none are left: engines that run faster take more, so
    they all finish within about one point of each other.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.backtest import Settings
    >>> from nbbacktest.engine.examples import SmaCross
    >>> hold_data("doc", nbb.load_sample("daily"))
    >>> job = register_job("doc-job", Job((SmaCross,), (("fast", "slow"),), Settings(), "doc"))
    >>> rows, interrupted = run_points("doc-job", None, [(0, 0, (10, 30), None)])
    >>> rows_schema = job.schema
    >>> rows.rows.tolist(), rows.ints[0, rows_schema.ints.index("trades")] > 0, rows.errors, interrupted
    ([0], np.True_, {}, False)
    >>> _ = release_data(["doc"])
    """
    spec = register_job(job_key, job if job is not None else _JOBS[job_key])
    settings, data_key, starts = spec.settings, spec.data_key, spec.trade_starts
    keep = None if spec.returns is None else ReturnsCollector(spec.returns, len(points))
    per = 1 if spec.returns is None else spec.returns.bars_per_period
    rows = RowsBuilder(spec.schema, keep)
    clock = time.perf_counter
    running = _RUNNING
    seed_of = RunSeeds(spec.seed)
    watch(job_key, spec.warn_after)
    if shared is None:
        blocks: Iterator[tuple[int, int]] = iter(((0, len(points)),))
    else:
        board = ClaimBoard.open(shared[0])
        blocks = board.claims(shared[1], len(points), shared[2])
    interrupt = _InterruptFlag()
    keep_freed_memory_in_sweeps()
    try:
        for begin, end in blocks:
            for row, class_index, values, symbol in points[begin:end]:
                if interrupt.raised:  # a point swallowed the interrupt (a bare except)
                    return rows.build(), True
                started = clock()
                running[:] = job_key, row, started
                names = spec.names[class_index]
                strategy = spec.classes[class_index]._from_values(dict(zip(names, values)))
                try:
                    if isinstance(strategy, PortfolioStrategy):
                        out = None  # a universe's runs keep no returns (run_returns.plan_returns)
                        stats = portfolio_stats(strategy, data_key, settings, seed_of(names, values, None))
                    else:
                        start = starts.get(symbol, 0) if starts and symbol is not None else 0
                        data = prepared(data_key, symbol, start)
                        out = None if keep is None else keep.slot(row, len(data.window))
                        stats = simulate_stats(strategy, data, settings, seed_of(names, values, symbol),
                                               private=True, returns_out=out, bars_per_period=per)
                except (Exception, SystemExit) as error:  # a failing point is a row, not a failed sweep
                    rows.failed(row, describe_error(error), clock() - started)
                    if spec.stop_on_error:
                        if shared is not None:
                            board.close_window(shared[1], len(points))
                        return rows.build(), True
                else:
                    rows.ok(row, stats, symbol, clock() - started)
                    if out is not None:
                        keep.keep(row)  # type: ignore[union-attr]
    except KeyboardInterrupt:
        return rows.build(), True
    finally:
        running[:] = None, None, 0.0
        interrupt.restore()
    if interrupt.raised:
        return rows.build(), True
    return rows.build(), False


class _InterruptFlag:
    """While a chunk runs in a process's main thread, SIGINT (cancel) also sets a flag.

    A point that catches the KeyboardInterrupt (``except:`` or ``except
    BaseException``) would otherwise let the chunk go on with its next point; the
    flag ends the chunk at the next point instead.
    """

    def __init__(self) -> None:
        self.raised = False
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._installed:
            # None: the handler was not set from Python; Python's own is the closest.
            signal.signal(signal.SIGINT, self._previous if self._previous is not None
                          else signal.default_int_handler)
            self._installed = False


class ClaimBoard:
    """Counters in a small file that the engines of one host claim points from.

    Slot ``i`` (8 bytes at offset ``8 * i``) holds how many points of window ``i``
    are taken; a file too short for a slot reads as 0. A claim is read, add and
    write under an exclusive ``flock``: a few microseconds, against a point's
    hundreds. The client creates the file and removes it when the sweep ends; each
    engine keeps it open for the sweeps it last took part in.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "claims")
    >>> ClaimBoard.create(path)
    >>> board = ClaimBoard.open(path)
    >>> list(board.claims(0, 10, members=2))
    [(0, 2), (2, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    >>> list(board.claims(0, 10, members=2))  # another engine finds the window empty
    []
    """

    _open: OrderedDict[str, ClaimBoard] = OrderedDict()
    _KEPT = 8

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @staticmethod
    def create(path: str) -> None:
        """An empty board (every window unclaimed) at ``path``."""
        os.close(os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))

    @classmethod
    def open(cls, path: str) -> ClaimBoard:
        """The board at ``path`` (a bare name is in this host's segment directory), kept open."""
        full = _resolve(path)
        board = cls._open.get(full)
        if board is None:
            board = cls._open[full] = cls(os.open(full, os.O_RDWR))
            while len(cls._open) > cls._KEPT:
                os.close(cls._open.popitem(last=False)[1].fd)
        return board

    def claims(self, slot: int, size: int, members: int) -> Iterator[tuple[int, int]]:
        """Yield ``(begin, end)`` blocks claimed from window ``slot`` of ``size`` points.

        Guided self-scheduling: a claim takes ``1 / (2 * members)`` of what is left
        (at least one point), so the first blocks are large and the last ones single
        points, and the engines finish close together.
        """
        while True:
            block = self._claim(slot, size, lambda left: max(1, left // (2 * members)))
            if block is None:
                return
            yield block

    def close_window(self, slot: int, size: int) -> None:
        """Take what is left of a window, so that the other engines stop (stop_on_error)."""
        self._claim(slot, size, lambda left: left)

    def _claim(self, slot: int, size: int, take: Callable[[int], int]) -> tuple[int, int] | None:
        fd = self.fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(fd, 8, 8 * slot)
            begin = int.from_bytes(raw, "little") if len(raw) == 8 else 0
            if begin >= size:
                return None
            end = begin + take(size - begin)
            os.pwrite(fd, end.to_bytes(8, "little"), 8 * slot)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return begin, end


def claims_supported() -> bool:
    """Whether engines of this host can share windows (``flock``, ``pread``: POSIX)."""
    return fcntl is not None and hasattr(os, "pread")


# The point running now, (job key, row, perf_counter at its start), read by the watchdog.
_RUNNING: list[Any] = [None, None, 0.0]
_WATCH: dict[str, float] = {}  # job key -> warn_after
_REPORTERS: dict[str, Any] = {}  # job key -> in-process callback
_watchdog: Any = None
# Set by watch(): a new job's limit may be shorter than the watchdog's current sleep.
_WATCH_CHANGED = threading.Event()
#: The key under which an engine publishes a slow point (``AsyncResult`` metadata "data").
SLOW_KEY = "nbbacktest_slow"


def watch(job_key: str, warn_after: float, report: Any = None) -> None:
    """Report points of ``job_key`` still running after ``warn_after`` seconds.

    A daemon thread looks at the running point about once a second (never during
    it: the loop only writes three fields per point). On an engine it publishes
    ``{SLOW_KEY: (row, seconds)}`` with ipyparallel's data publication, which the
    client reads from the task's metadata; in-process it calls ``report(row, seconds)``.
    """
    global _watchdog
    _WATCH[job_key] = warn_after
    if report is not None:
        _REPORTERS[job_key] = report
    _WATCH_CHANGED.set()
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=_watch_loop, name="nbbacktest-watchdog", daemon=True)
        _watchdog.start()


def unwatch(job_key: str) -> None:
    """Stop reporting for ``job_key`` (in-process sweeps, at their end)."""
    _WATCH.pop(job_key, None)
    _REPORTERS.pop(job_key, None)


def _watch_loop() -> None:
    reported: tuple[Any, Any, float] | None = None
    while True:
        limits = list(_WATCH.values())
        _WATCH_CHANGED.wait(min([1.0, *(w / 4 for w in limits)]))
        _WATCH_CHANGED.clear()
        job_key, row, started = _RUNNING
        limit = _WATCH.get(job_key) if job_key is not None else None
        if limit is None or (job_key, row, started) == reported:
            continue
        seconds = time.perf_counter() - started
        if seconds < limit:
            continue
        reported = (job_key, row, started)
        report = _REPORTERS.get(job_key)
        try:
            if report is not None:
                report(row, seconds)
            else:
                from ipyparallel.datapub import publish_data

                publish_data({SLOW_KEY: (row, seconds)})
        except Exception:
            pass  # a warning that cannot be delivered must not disturb the run


def describe_error(error: BaseException) -> ErrorInfo:
    """Type name, message and traceback of the user's exception behind ``error``."""
    cause = error.__cause__ if isinstance(error, StrategyError) and error.__cause__ else error
    text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return type(cause).__name__, str(cause), text

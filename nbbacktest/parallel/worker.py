"""What runs on the engines (and in-process): data attach, job cache, run a chunk.

Everything an engine keeps lives in this module's globals: the attached data by
fingerprint, the prepared numpy views per symbol, and recent jobs (strategy classes
plus settings). Tasks carry keys into these caches, never the data itself, and the
in-process path runs exactly the same :func:`run_points`, so a point computes the
same bits wherever it runs.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from nbbacktest.engine.backtest import PreparedData, Settings, simulate_stats
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import StrategyError

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


def host_name() -> str:
    """This process's host as nbbacktest sees it (``NBBACKTEST_HOSTNAME`` overrides)."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def engine_info() -> dict[str, Any]:
    """Host, pid and data keys held: what the client asks a new engine."""
    return {"host": host_name(), "pid": os.getpid(), "data": sorted(_DATA)}


def hold_data(key: str, data: Any) -> None:
    """Keep a frame or universe under ``key`` (in-process path: no copy)."""
    if key not in _DATA:
        _DATA[key] = data


def _resolve(path: str) -> str:
    # A bare file name lives in this host's segment directory.
    if os.path.isabs(path):
        return path
    from nbbacktest.parallel.shared import segment_dir

    return str(segment_dir() / path)


def attach_data(key: str, path: str, layout: Any) -> str:
    """Attach a shared-memory segment of this host under ``key``; returns the host."""
    if key not in _DATA:
        from nbbacktest.parallel.shared import attach

        _DATA[key] = attach(_resolve(path), layout)
    return host_name()


def receive_data(key: str, path: str, layout: Any, *arrays: Any) -> str:
    """On another host: write the arrays into this host's segment once, then attach."""
    from nbbacktest.parallel.shared import write_segment

    if key not in _DATA:
        full = _resolve(path)
        if not os.path.exists(full):
            write_segment(layout, list(arrays), full)
            _WRITTEN[key] = full
        attach_data(key, full, layout)
    return host_name()


def release_data(keys: list[str] | None = None) -> list[str]:
    """Forget attached data (all when ``keys`` is None) and unlink segments written here."""
    dropped = list(_DATA) if keys is None else [k for k in keys if k in _DATA]
    for key in dropped:
        _DATA.pop(key, None)
        written = _WRITTEN.pop(key, None)
        if written is not None:
            try:
                os.unlink(written)
            except OSError:
                pass
    for prepared_key in [k for k in _PREPARED if k[0] in dropped]:
        del _PREPARED[prepared_key]
    return dropped


def prepared(data_key: str, symbol: str | None) -> PreparedData:
    """Numpy views of one frame of the data under ``data_key``, built once."""
    key = (data_key, symbol)
    found = _PREPARED.get(key)
    if found is None:
        data = _DATA[data_key]
        frame = data if symbol is None else data[symbol]
        found = _PREPARED[key] = PreparedData.from_frame(frame)
    return found


def register_job(key: str, job: Job | bytes) -> Job:
    """Cache a job under ``key`` (bytes are a cloudpickle of the Job)."""
    found = _JOBS.get(key)
    if found is None:
        if isinstance(job, bytes):
            import cloudpickle

            job = cloudpickle.loads(job)
        found = _JOBS[key] = job  # type: ignore[assignment]
        while len(_JOBS) > _JOBS_KEPT:
            _JOBS.popitem(last=False)
    return found  # type: ignore[return-value]


#: One point of a task: (row, class index, param values, symbol, seed).
PointSpec = tuple[int, int, tuple, "str | None", int]
#: One result row: (row, stats or None, (error type, message, traceback) or None, seconds).
RowResult = tuple[int, "dict[str, Any] | None", "tuple[str, str, str] | None", float]


def run_points(
    job_key: str, job: Job | bytes | None, points: list[PointSpec]
) -> tuple[list[RowResult], bool]:
    """Run points of a job; returns their rows and whether it was interrupted.

    A point whose strategy raises gives a row with the error and the traceback of
    the user's code; the next point runs (unless the job has ``stop_on_error``).
    KeyboardInterrupt (cancel) stops the chunk and keeps the rows already finished.
    """
    spec = register_job(job_key, job) if job is not None else _JOBS[job_key]
    settings, data_key = spec.settings, spec.data_key
    rows: list[RowResult] = []
    clock = time.perf_counter
    running = _RUNNING
    watch(job_key, spec.warn_after)
    try:
        for row, class_index, values, symbol, seed in points:
            started = clock()
            running[:] = job_key, row, started
            cls = spec.classes[class_index]
            strategy = cls._from_values(dict(zip(spec.names[class_index], values)))
            try:
                stats = simulate_stats(strategy, prepared(data_key, symbol), settings, seed,
                                       private=True)
            except Exception as error:  # a failing point is a row, not a failed sweep
                rows.append((row, None, describe_error(error), clock() - started))
                if spec.stop_on_error:
                    return rows, True
            else:
                rows.append((row, stats, None, clock() - started))
    except KeyboardInterrupt:
        return rows, True
    finally:
        running[:] = None, None, 0.0
    return rows, False


# The point running now, (job key, row, perf_counter at its start), read by the watchdog.
_RUNNING: list[Any] = [None, None, 0.0]
_WATCH: dict[str, float] = {}  # job key -> warn_after
_REPORTERS: dict[str, Any] = {}  # job key -> in-process callback
_watchdog: Any = None
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
    if _watchdog is None or not _watchdog.is_alive():
        import threading

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
        time.sleep(min([1.0, *(w / 4 for w in limits)]) if limits else 1.0)
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


def describe_error(error: BaseException) -> tuple[str, str, str]:
    """Type name, message and traceback of the user's exception behind ``error``."""
    cause = error.__cause__ if isinstance(error, StrategyError) and error.__cause__ else error
    text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return type(cause).__name__, str(cause), text

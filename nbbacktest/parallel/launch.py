"""The entry points of a sweep: :func:`sweep`, :func:`run_many`, :func:`resume` and :func:`load_sweep`.

Each checks its arguments, builds the :class:`~nbbacktest.parallel.spec.SweepSpec`,
and hands it to :func:`launch`, which opens the checkpoint, picks the progress
display and starts the runner in a thread of its own. The client validates
everything first (grid, where, data, strategy picklability), so that a mistake
is an error before a cluster starts or data moves.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import cloudpickle
import numpy as np
import pandas as pd

from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.costs import CommissionSpec, Costs
from nbbacktest.engine.data import is_universe, validate_data
from nbbacktest.engine.portfolio import check_portfolio_params, decision_bars, is_portfolio
from nbbacktest.engine.strategy import Strategy
from nbbacktest.engine.universe import Universe, as_universe
from nbbacktest.errors import NbbacktestWarning, SweepError, SweepFailedError
from nbbacktest.parallel import pickling, worker
from nbbacktest.parallel.card import new_card, read_card, resumed_card
from nbbacktest.parallel.checkpoint import Checkpoint, load_state, read_rows
from nbbacktest.parallel.cluster import Cluster, current_or_start, resolve_engine_count
from nbbacktest.parallel.cluster_runner import ClusterRunner
from nbbacktest.parallel.events import SweepEvent
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.grid import Plan, plan_instances, plan_sweep
from nbbacktest.parallel.progress import start_progress
from nbbacktest.parallel.rows import StatSchema
from nbbacktest.parallel.run_returns import DEFAULT_RETURNS_BUDGET, plan_returns
from nbbacktest.parallel.runners import LocalRunner, Runner
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult, SweepWriter


def sweep(
    strategy: type[Strategy] | Strategy,
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    where: Callable[[Any], bool] | str | None = None,
    n: int | None = None,
    seed: int = 0,
    metric: str = "sharpe",
    maximize: bool = True,
    min_trades: int = 0,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    symbols: Sequence[str] | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    stop_on_error: bool = False,
    save: str | os.PathLike[str] | None = None,
    resume: bool | str = False,
    warn_after: float = 3600.0,
    progress: bool | Callable[[SweepResult], Any] | None = None,
    block: bool = True,
    cash: float = 10_000.0,
    commission: CommissionSpec = 0.0,
    slippage: float = 0.0,
    fill: str = "next_open",
    fractional: bool = True,
    leverage: float | None = None,
    close_at_end: bool = False,
    spread: float = 0.0,
    returns_budget: int = DEFAULT_RETURNS_BUDGET,
) -> SweepResult:
    """Backtest every point of a parameter grid, in parallel on an ipyparallel cluster.

    Parameters
    ----------
    strategy : Strategy subclass (or instance, whose values fill params not in the grid)
    data : DataFrame or {symbol: DataFrame}
        One instrument, or a universe: every point then runs on every symbol.
    grid : dict of iterables, or a list of such dicts
        The values of each param to try (the product; a list is a union of grids).
    where : callable or str, optional
        Keep only points for which ``where(p)`` is true (``p.fast < p.slow``).
    n : int, optional
        Run a random sample of ``n`` points (deterministic from ``seed``).
    seed : int
        The sweep's seed: each run's seed is derived from it and the run's params.
    metric, maximize
        What ``best`` and the progress display rank by (a stat name).
    min_trades : int
        Runs with fewer trades stay in ``results``, marked True in its
        ``too_few_trades`` column, but never become ``best`` (nor the best so far
        that the progress display shows). 0, the default, sets no minimum.
    engines : int, -1, "auto" or None
        None or 1 runs in this process; N uses N engines of the current cluster (or
        starts a local one); -1 every core.
    cluster : Cluster, optional
        The cluster to use instead of the current one.
    symbols : list of str, optional
        Subset of a universe's symbols.
    chunksize : int or "auto"
        Points per task; "auto" sizes chunks from the measured run time.
    on_result : callable, optional
        Called with every event (``PointDone``, ``PointFailed``, ...).
    stop_on_error : bool
        Stop at the first failing point; ``reason`` (and the progress display) says which.
    save : str or path, optional
        A directory to checkpoint into: every finished run is appended as it
        arrives (``rows.jsonl``), with the sweep's spec, its data, and ``errors.log``.
    resume : bool or "force"
        Go on from the checkpoint in ``save``: finished runs are not run again and
        the final table equals an uninterrupted run's (see :func:`resume`). Refused
        when the code of a strategy class (or of its bases outside nbbacktest)
        changed since the checkpoint was made: its rows came from the old code.
        ``"force"`` keeps them anyway (for a change that cannot alter results).
    warn_after : float
        Seconds after which a run still going emits a ``PointSlow`` event naming it.
    progress : bool or callable, optional
        True shows the default display: a widget in a notebook (once
        ``nbbacktest`` is imported there), else a text line on stderr; False shows
        nothing; a callable is called with the SweepResult before it starts, to
        show it its own way. The default is True unless NBBACKTEST_PROGRESS=0.
    block : bool
        Wait for the end; False returns at once. Ctrl-C while waiting cancels the
        sweep and returns it with its finished rows (status "cancelled").
    cash, commission, slippage, fill, fractional, leverage, close_at_end, spread
        Simulation settings, as in :func:`nbbacktest.backtest`. ``commission`` is a
        fraction, a pair ``(fixed per fill, fraction)`` or a callable ``cost(size,
        price)`` (a lambda travels to the engines); ``spread`` is a fraction of price
        paid once per round trip, half at entry and half at exit.
    returns_budget : int
        Bytes of the runs' returns kept for ``credibility()`` (default 256 MiB; 0
        keeps none and turns it off). Over budget, a subsample of runs chosen from
        ``seed`` keeps them (see :mod:`nbbacktest.parallel.run_returns`).

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
    ...                   grid={"fast": range(5, 30, 5), "slow": range(20, 80, 20)},
    ...                   where=lambda p: p.fast < p.slow, progress=False)
    >>> len(sweep.results)
    13
    """
    settings = Settings(cash, commission, slippage, fill, fractional, leverage, close_at_end, spread)
    if is_portfolio(strategy):
        universe = portfolio_universe(data, symbols)
        plan = plan_sweep(strategy, grid, where=where, n=n, seed=seed)
        spec = portfolio_spec(plan, universe, settings, metric, maximize, stop_on_error, warn_after,
                              min_trades)
        return launch(spec, universe, engines=engines, cluster=cluster, chunksize=chunksize,
                      on_result=on_result, progress=progress, block=block, save=save, resume=resume)
    data = validate_data(data, name="data")
    plan = plan_sweep(strategy, grid, where=where, n=n, seed=seed,
                      symbols=universe_symbols(data, symbols))
    spec = SweepSpec(plan, settings, metric, maximize, stop_on_error, warn_after, min_trades=min_trades,
                     returns=plan_returns(len(plan), data, returns_budget, seed))
    return launch(spec, data, engines=engines, cluster=cluster, chunksize=chunksize,
                  on_result=on_result, progress=progress, block=block, save=save, resume=resume)


def run_many(
    instances: Sequence[Strategy],
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    seed: int = 0,
    metric: str = "sharpe",
    maximize: bool = True,
    min_trades: int = 0,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    symbols: Sequence[str] | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    stop_on_error: bool = False,
    save: str | os.PathLike[str] | None = None,
    resume: bool = False,
    warn_after: float = 3600.0,
    progress: bool | Callable[[SweepResult], Any] | None = None,
    block: bool = True,
    returns_budget: int = DEFAULT_RETURNS_BUDGET,
    **settings: Any,
) -> SweepResult:
    """Backtest a list of strategy instances (of any classes), in parallel.

    Takes the options of :func:`sweep` (but no grid), ``min_trades`` and
    ``returns_budget`` included.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> runs = nbb.run_many([SmaCross(10, 30), SmaCross(20, 60)], nbb.load_sample("daily"),
    ...                     progress=False)
    >>> runs.results["trades"].gt(0).all()
    np.True_
    """
    settings_ = Settings.from_options(settings, "run_many")
    kinds = {is_portfolio(instance) for instance in instances} if isinstance(instances, Sequence) else set()
    if kinds == {True}:
        universe = portfolio_universe(data, symbols)
        plan = plan_instances(instances, seed=seed)
        spec = portfolio_spec(plan, universe, settings_, metric, maximize, stop_on_error, warn_after,
                              min_trades)
        return launch(spec, universe, engines=engines, cluster=cluster, chunksize=chunksize,
                      on_result=on_result, progress=progress, block=block, save=save, resume=resume)
    if len(kinds) > 1:
        raise SweepError("run_many got portfolio strategies (each runs over the whole universe) and"
                         " single-instrument ones (each runs per symbol): run them in two calls")
    data = validate_data(data, name="data")
    plan = plan_instances(instances, seed=seed, symbols=universe_symbols(data, symbols))
    spec = SweepSpec(plan, settings_, metric, maximize, stop_on_error, warn_after,
                     min_trades=min_trades, returns=plan_returns(len(plan), data, returns_budget, seed))
    return launch(spec, data, engines=engines, cluster=cluster, chunksize=chunksize,
                  on_result=on_result, progress=progress, block=block, save=save, resume=resume)


def resume(
    save: str | os.PathLike[str],
    *,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    progress: bool | Callable[[SweepResult], Any] | None = None,
    block: bool = True,
    trusted: bool = False,
) -> SweepResult:
    """Go on with the sweep checkpointed in ``save``, in this or any later process.

    Everything comes from the directory: strategy classes (by value, so classes
    defined in a notebook or a killed script come back), grid, settings, metric
    and data. Finished runs are not run again; the final table equals an
    uninterrupted run's.

    A checkpoint holds code: its strategy classes are pickled, and loading them
    runs whatever its author put there. So only checkpoints signed by this user
    on this machine are loaded (each sweep signs its own with a per-user key);
    one received from someone else is refused unless ``trusted=True``.

    Parameters
    ----------
    save : str or path
        The directory of ``sweep(..., save=...)``.
    engines, cluster, chunksize, on_result, progress, block
        As in :func:`sweep`.
    trusted : bool
        Load a checkpoint that this user did not make (it is then signed as
        this user's). Only for checkpoints from a source you trust.

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> first = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10], "slow": [40]},
    ...                   save=folder, progress=False)
    >>> again = nbb.resume(folder, progress=False)
    >>> again.results.equals(first.results), again.status
    (True, 'complete')
    """
    _check_save(save)
    if not isinstance(trusted, (bool, np.bool_)):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    spec, data = load_state(save, trusted=bool(trusted))
    return launch(spec, data, engines=engines, cluster=cluster, chunksize=chunksize,
                  on_result=on_result, progress=progress, block=block, save=save, resume=True)


def load_sweep(save: str | os.PathLike[str], *, trusted: bool = False) -> SweepResult:
    """The sweep saved in ``save``, finished and read-only: nothing runs.

    Spec, data and rows come from the directory (rows as saved, failed ones with
    their errors), and ``card`` from its ``card.json`` (None in a directory older
    than cards). Its ``results`` equal those of the sweep that saved it, engine,
    host and seconds included (the checkpoint keeps them). ``detail(i)``,
    ``table()`` and the other views work on it; no cluster starts and no progress
    shows. Status "complete" when every row is saved; else "cancelled", the
    missing rows cancelled, and ``reason`` says how many and that
    ``nbb.resume(save)`` runs them. A directory a sweep is writing now loads as
    it stands.

    As with :func:`resume`, only checkpoints signed by this user load, unless
    ``trusted=True``: loading one unpickles its strategy classes.

    Parameters
    ----------
    save : str or path
        The directory of ``sweep(..., save=...)``.
    trusted : bool
        Load a checkpoint that this user did not make (it is then signed as this user's).

    Returns
    -------
    SweepResult

    Raises
    ------
    TypeError
        ``save`` is not a path.
    SweepError
        ``save`` holds no checkpoint, or a damaged or foreign one.

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> first = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10], "slow": [40]},
    ...                   save=folder, progress=False)
    >>> saved = nbb.load_sweep(folder)
    >>> saved.results.equals(first.results), saved.status, saved.card == first.card
    (True, 'complete', True)
    """
    _check_save(save)
    if not isinstance(trusted, (bool, np.bool_)):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    spec, data = load_state(save, trusted=bool(trusted))
    result = SweepResult(spec, data)
    writer = SweepWriter(result)
    writer.restore(read_rows(save).values())
    if result.kept_returns is not None:
        result.kept_returns.load(save)
    result.card = card = read_card(save)
    missing = len(result.pending_rows())
    status, reason = "complete", ""
    if missing:
        last = (card or {}).get("status"), (card or {}).get("reason")
        ended = (" (its sweep was interrupted, or is still running)" if last[0] == "running"
                 else " (its sweep was cancelled)" if last[0] == "cancelled"
                 else f" (its sweep ended: {last[1]})" if last[1] else "")
        status, reason = "cancelled", (
            f"{missing} of {len(result)} rows are not in the checkpoint{ended}:"
            f" nbb.resume({str(save)!r}) runs them")
    seconds = card.get("seconds") if card is not None else None
    writer.settle(status, reason, float(seconds) if isinstance(seconds, (int, float)) else math.nan)
    return result


def _check_save(save: Any) -> None:
    if not isinstance(save, (str, os.PathLike)):
        raise TypeError(f"save must be the path of a sweep's save directory, got"
                        f" {type(save).__name__} {save!r:.60}")


def portfolio_universe(data: Any, symbols: Sequence[str] | str | None) -> Universe:
    """The universe a portfolio sweep runs on: ``data`` as a :class:`Universe`, or ``symbols`` of it.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> portfolio_universe(nbb.load_sample("universe"), ["BBB", "AAA"]).symbols.tolist()
    ['BBB', 'AAA']
    """
    if isinstance(data, pd.DataFrame):
        raise SweepError("a portfolio strategy runs over a universe: pass nbb.load_universe(...) or a"
                         " mapping {symbol: DataFrame}, not one frame")
    universe = as_universe(data)
    if symbols is None:
        return universe
    chosen = universe_symbols(universe, symbols)
    return universe.select(cast(list[str], chosen))


def portfolio_spec(plan: Plan, universe: Universe, settings: Settings, metric: str, maximize: bool,
                   stop_on_error: bool, warn_after: float, min_trades: int) -> SweepSpec:
    """The spec of a portfolio sweep, every point checked first: its construction
    parameters against each other and the leverage limit, and its rebalance rule
    against the universe's bars, so that no engine gets a point that cannot run."""
    if Costs.parse(settings.commission).fn is not None:
        raise SweepError("a portfolio sweep takes commission as a fraction or a (fixed, fraction) pair;"
                         " a callable cost(size, price) is for single-instrument runs")
    rules: set[str] = set()
    seen: set[tuple[type, tuple]] = set()
    for i in range(len(plan)):
        key = (plan.class_at(i), plan.values[i])
        if key in seen:
            continue
        seen.add(key)
        values = plan.params(i)
        check_portfolio_params(values, settings.leverage, f"{key[0].__name__}({_shown(values)})")
        rules.add(str(values.get("rebalance", "change")))
    for rule in rules:
        decision_bars(universe.index, rule, settings.fill)
    return SweepSpec(plan, settings, metric, maximize, stop_on_error, warn_after, StatSchema.portfolio(),
                     min_trades=min_trades)


def _shown(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def universe_symbols(data: Any, symbols: Sequence[str] | str | None) -> list[str] | None:
    """The symbols a sweep runs on: all of a universe's, or ``symbols`` checked against it.

    None for a single frame (where ``symbols`` is an error). A bare str is one symbol.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> universe_symbols(nbb.load_sample("universe"), ["BBB", "AAA"])
    ['BBB', 'AAA']
    >>> universe_symbols(nbb.load_sample("universe"), "AAA")
    ['AAA']
    >>> universe_symbols(nbb.load_sample("daily"), None) is None
    True
    """
    if not is_universe(data):
        if symbols is not None:
            raise SweepError("symbols= selects symbols of a universe, but data is a single frame")
        return None
    if symbols is None:
        return list(data)
    if isinstance(symbols, str):
        symbols = [symbols]  # one symbol, not its letters
    elif not isinstance(symbols, Iterable):
        raise SweepError(f"symbols must be a list of symbols such as ['AAA', 'BBB'] or one symbol,"
                         f" got {type(symbols).__name__} {symbols!r}")
    chosen = list(symbols)  # once: an iterator can be read only once
    unknown = [s for s in chosen if s not in data]
    if unknown:
        raise SweepError(f"symbols {unknown} are not in the data; it has {', '.join(map(str, data))}")
    return chosen


def _check_chunksize(chunksize: Any) -> int | None:
    if chunksize == "auto":
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise SweepError(f"chunksize must be a positive int or 'auto', got {chunksize!r}")
    return chunksize


def launch(
    spec: SweepSpec,
    data: Any,
    *,
    engines: Any = None,
    cluster: Cluster | None = None,
    chunksize: Any = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    progress: bool | Callable[[SweepResult], Any] | None = None,
    block: bool = True,
    save: Any = None,
    resume: bool | str = False,
) -> SweepResult:
    """Run ``spec`` on ``data``: check the options, open the checkpoint, start a runner.

    The common end of :func:`sweep`, :func:`run_many` and :func:`resume`; the
    options are theirs.
    """
    fixed_chunk = _check_chunksize(chunksize)
    if cluster is not None and not isinstance(cluster, Cluster):
        raise TypeError(f"cluster must be an nbbacktest.Cluster, got {type(cluster).__name__}")
    if engines is not None:
        resolve_engine_count(engines)  # validate before anything starts
    if on_result is not None and not callable(on_result):
        raise TypeError(f"on_result must be callable, got {type(on_result).__name__}")
    if progress is not None and not isinstance(progress, (bool, np.bool_)) and not callable(progress):
        raise TypeError(f"progress must be True, False or a callable taking the SweepResult,"
                        f" got {type(progress).__name__} {progress!r:.60}")
    for name, flag in (("resume", resume == "force" or resume), ("block", block)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if resume and save is None:
        raise SweepError("resume=True needs save=DIR, the directory of the checkpoint to go on from")
    parallel = cluster is not None or (engines is not None and engines != 1)
    data_key = job_blob = None
    if parallel or save is not None:
        # Everything that can fail is checked before a cluster starts or data moves.
        data_key = fingerprint(data)
    if parallel:
        job_blob = job_bytes(spec.job(data_key))  # type: ignore[arg-type]
    result = SweepResult(spec, data)
    result.card = new_card(spec, data, data_key)
    writer = SweepWriter(result)
    if save is not None:
        result.checkpoint, saved = Checkpoint.open(save, spec=spec, data=data, data_key=data_key,
                                                   resume=resume)
        writer.restore(saved.values())
        if result.kept_returns is not None and saved:
            result.kept_returns.load(save)  # the rows restored without returns get theirs recomputed
    try:
        if result.checkpoint is not None:
            before = result.checkpoint.saved_spec
            if before is not None:  # a resume: the card keeps the first start
                resumed_card(result.card, read_card(save), restored=len(saved),
                             created=before.get("created"))
            result.checkpoint.write_card(result.card)
        if on_result is not None:
            result.events.subscribe(on_result)
        start_progress(result, progress)
        if not parallel:
            runner: Runner = LocalRunner(writer, fixed_chunk)
        else:
            if cluster is None:
                cluster = current_or_start(engines, _data_bytes(data))
            cluster.check_running()
            wanted = None if engines in (None, -1, "auto") else resolve_engine_count(engines)
            runner = ClusterRunner(writer, cluster, wanted, data_key, job_blob, fixed_chunk)  # type: ignore[arg-type]
        runner.prepare()
    except BaseException:
        # The checkpoint holds its directory's lock: a sweep that never started frees it.
        if result.checkpoint is not None:
            result.checkpoint.close()
        raise
    # The runner always works in a thread: the caller's thread stays free to wait,
    # to turn Ctrl-C into a clean cancel, and to keep a notebook's widgets responsive.
    thread = threading.Thread(target=runner.drive, name="nbbacktest-sweep", daemon=True)
    thread.start()
    if block:
        result.wait()
        thread.join()
        error = result.exception()
        if isinstance(error, Exception):
            raise failed_error(result, error, save) from error
        if error is not None:
            raise error
        warn_if_every_run_failed(result)
    return result


def warn_if_every_run_failed(result: SweepResult) -> None:
    """A finished sweep in which every run failed has no best run: say so, with the first error."""
    if not len(result) or result.status != "complete" or result.failed < len(result):
        return
    row = result.store.first_error
    etype, message, _ = result.store.errors[row]  # type: ignore[index]
    warnings.warn(
        f"every run of the sweep failed ({len(result):,} runs), so it has no best run; the first,"
        f" row {row} ({result.describe(row)}), raised {etype}: {message} (its traceback is in"  # type: ignore[arg-type]
        " results['traceback'])", NbbacktestWarning, stacklevel=4)


def failed_error(result: SweepResult, error: BaseException, save: Any = None) -> SweepFailedError:
    """The error a blocking sweep raises when it fails: what went wrong, and where its rows are."""
    kept = result.progress
    where = ("error.result holds them (error.result.results is the table)" if save is None else
             f"error.result holds them, and so does the checkpoint: sweep(..., save={str(save)!r},"
             " resume=True) runs the rest")
    return SweepFailedError(
        f"the sweep failed: {type(error).__name__}: {error}; {kept} of {len(result)} rows"
        f" finished and are kept: {where}", result)


def _data_bytes(data: Any) -> int:
    if isinstance(data, Universe):
        return data.nbytes
    frames = data.values() if isinstance(data, dict) else [data]
    return int(sum(f.memory_usage(index=True).sum() for f in frames))


def job_bytes(job: worker.Job) -> bytes:
    """cloudpickle the job, naming the attribute that cannot travel when one cannot."""
    try:
        return pickling.dumps(job, job.classes)
    except Exception as error:
        for cls in job.classes:
            for name, value in vars(cls).items():
                try:
                    cloudpickle.dumps(value)
                except Exception:
                    raise SweepError(
                        f"strategy class {cls.__name__} cannot be sent to the engines: its"
                        f" attribute {name!r} ({type(value).__name__}) cannot be pickled ({error})"
                    ) from error
        raise SweepError(f"the strategy cannot be sent to the engines: {error}") from error



"""Each run's returns, kept compactly so a sweep can tell whether its winner is real.

``SweepResult.credibility()`` (:mod:`nbbacktest.parallel.credibility`) needs every
run's returns on one grid of periods. They travel back with the rows that the
engines send, and the client keeps them, within a memory budget:

- **Periods.** A run's per-bar returns, or on long data consecutive bars
  compounded into at most :data:`MAX_PERIODS` periods (the rule is in
  :mod:`nbbacktest.engine.period_returns`): every kept run is a float32 vector of
  the same length, ``periods``.
- **Budget.** ``returns_budget`` bytes (default :data:`DEFAULT_RETURNS_BUDGET`,
  256 MiB) per sweep; 0 keeps none and turns credibility off. While ``runs x
  periods x 4`` bytes fit, every run's returns are kept. Otherwise a subsample of
  ``budget // (periods * 4) - 1`` runs is chosen before the sweep starts, as
  ``numpy.random.default_rng(seed).choice(runs, size, replace=False)`` (sorted),
  ``seed`` the sweep's seed: the engines know which rows to send, and a sweep
  in-process and on a cluster keeps the same rows. The one slot left over takes
  the best run's returns, recomputed locally at the end when the best run is not
  in the subsample, so the kept returns never exceed the budget.
- **Wire.** A chunk's :class:`~nbbacktest.parallel.rows.Rows` carries a
  :class:`ChunkReturns`: the run numbers and a float32 ``(k, periods)`` block, for
  the rows of the chunk that keep returns and finished (a failed run has none).
- **Storage.** :class:`KeptReturns` holds one preallocated float32 matrix of at
  most the budget; a sweep with ``save=`` writes it to ``returns.npz`` in the save
  directory (atomically) when it ends, which ``nbb.load_sweep`` and ``nbb.resume``
  read back. Rows restored from ``rows.jsonl`` without their returns (a sweep killed
  before its end wrote none) have them recomputed locally when ``credibility()``
  needs them: a run is deterministic, so they come out the same.
- **Universes** keep no returns (their symbols' bars differ): ``credibility()``
  refuses them, naming ``symbols=`` to sweep one symbol at a time.

Examples
--------
>>> plan = ReturnsPlan(bars=2500, periods=2500, bars_per_period=1, runs=10)
>>> plan.capacity, plan.wants(7)
(10, True)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nbbacktest.engine.backtest import PreparedData, simulate_stats
from nbbacktest.engine.data import _warn, is_universe
from nbbacktest.engine.period_returns import period_layout, period_returns
from nbbacktest.errors import SweepError

if TYPE_CHECKING:
    from nbbacktest.parallel.spec import SweepSpec

__all__ = ["DEFAULT_RETURNS_BUDGET", "MAX_PERIODS", "RETURNS_FILE", "ChunkReturns", "KeptReturns",
           "ReturnsCollector", "ReturnsPlan", "check_budget", "market_returns", "plan_returns",
           "recompute"]

#: Bytes of kept returns per sweep by default: 10,000 runs of 2,520 periods x 4 bytes
#: (~96 MiB) fit whole, and a notebook's memory is not at risk.
DEFAULT_RETURNS_BUDGET = 256 * 2**20
#: Periods kept per run at most: ten years of daily bars stay per bar; an hourly or
#: minute series is compounded into ~2,520 periods, plenty for 16 CSCV blocks
#: (157 periods each) and for a Sharpe ratio's moments, at 10 KB a run.
MAX_PERIODS = 2520
#: The file of a save directory that holds the kept returns.
RETURNS_FILE = "returns.npz"


@dataclass(frozen=True)
class ReturnsPlan:
    """Which runs of a sweep keep their returns, and on which periods.

    Attributes
    ----------
    bars : int
        The bars of the data (a run on other bars keeps none).
    periods, bars_per_period : int
        The length of each kept vector, and the bars compounded into each value.
    runs : int
        The runs of the sweep.
    rows : tuple of int, optional
        The runs that keep returns, sorted (a subsample); None: every run.
    budget : int
        The budget in bytes it was planned for.
    """

    bars: int
    periods: int
    bars_per_period: int
    runs: int
    rows: tuple[int, ...] | None = None
    budget: int = DEFAULT_RETURNS_BUDGET

    @functools.cached_property
    def wanted(self) -> frozenset[int] | None:
        """The rows that keep returns (None: all), as a set: built once per engine."""
        return None if self.rows is None else frozenset(self.rows)

    def wants(self, row: int) -> bool:
        """Whether run ``row`` sends its returns."""
        wanted = self.wanted
        return wanted is None or row in wanted

    @property
    def row_bytes(self) -> int:
        """Bytes of one kept run."""
        return self.periods * 4

    @property
    def capacity(self) -> int:
        """Runs the client can hold: the subsample and one slot for the best run."""
        return self.runs if self.rows is None else min(self.runs, self.budget // self.row_bytes)


def check_budget(budget: Any) -> int:
    """``returns_budget`` as bytes >= 0, or an error naming it.

    Examples
    --------
    >>> check_budget(0)
    0
    """
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise SweepError(f"returns_budget must be a number of bytes, 0 or more (0 keeps no returns and"
                         f" turns credibility() off), got {budget!r:.60}")
    return int(budget)


def plan_returns(runs: int, data: Any, budget: int, seed: int,
                 max_periods: int = MAX_PERIODS) -> ReturnsPlan | None:
    """The returns a sweep of ``runs`` runs on ``data`` keeps (None: none, a universe or budget 0).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> plan = plan_returns(10_000, nbb.load_sample("daily"), 20 * 2500 * 4, seed=0)
    >>> plan.periods, len(plan.rows), plan.capacity
    (2500, 19, 20)
    """
    budget = check_budget(budget)
    if not budget or not runs or is_universe(data):
        return None
    periods, per = period_layout(len(data), max_periods)
    plan = ReturnsPlan(len(data), periods, per, runs, None, budget)
    if runs * plan.row_bytes <= budget:
        return plan
    size = max(0, min(runs, budget // plan.row_bytes) - 1)  # one slot left for the best run
    chosen = np.random.default_rng(seed).choice(runs, size=size, replace=False)
    return ReturnsPlan(len(data), periods, per, runs, tuple(sorted(chosen.tolist())), budget)


class ChunkReturns(NamedTuple):
    """The returns of a chunk's runs that keep them, as they travel with its rows."""

    rows: np.ndarray  #: int64 run numbers
    values: np.ndarray  #: float32, one row of ``periods`` returns per run

    def without(self, runs: Iterable[int]) -> ChunkReturns:
        """These returns less ``runs``."""
        keep = ~np.isin(self.rows, list(runs))
        return ChunkReturns(self.rows[keep], self.values[keep])


class ReturnsCollector:
    """An engine's side: a float32 row for each run of a chunk that keeps its returns."""

    __slots__ = ("plan", "points", "buffer", "rows")

    def __init__(self, plan: ReturnsPlan, points: int) -> None:
        self.plan = plan
        self.points = points
        self.buffer: np.ndarray | None = None  # allocated on first use, touched row by row
        self.rows: list[int] = []

    def slot(self, row: int, bars: int) -> np.ndarray | None:
        """The row run ``row`` (on ``bars`` bars) writes its returns into; None if it keeps none."""
        plan = self.plan
        if bars != plan.bars or not plan.wants(row):
            return None
        if self.buffer is None:
            self.buffer = np.empty((self.points, plan.periods), dtype=np.float32)
        return self.buffer[len(self.rows)]

    def keep(self, row: int) -> None:
        """Run ``row`` finished: its slot holds its returns."""
        self.rows.append(row)

    def build(self) -> ChunkReturns | None:
        """The kept returns (None: none); a view of the buffer, pickled as just those rows."""
        if not self.rows or self.buffer is None:
            return None
        return ChunkReturns(np.array(self.rows, dtype=np.int64), self.buffer[: len(self.rows)])


class KeptReturns:
    """The client's side: the returns of a sweep's kept runs, in one matrix of at most the budget.

    Examples
    --------
    >>> kept = KeptReturns(ReturnsPlan(bars=3, periods=3, bars_per_period=1, runs=2))
    >>> kept.add(ChunkReturns(np.array([1]), np.ones((1, 3), np.float32)))
    >>> kept.rows().tolist(), kept.nbytes
    ([1], 24)
    """

    def __init__(self, plan: ReturnsPlan) -> None:
        self.plan = plan
        self.values = np.empty((plan.capacity, plan.periods), dtype=np.float32)  # pages touched as filled
        self._slots: dict[int, int] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of the matrix (at most the budget)."""
        return int(self.values.nbytes)

    def __contains__(self, row: object) -> bool:
        return row in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, chunk: ChunkReturns) -> None:
        """Keep a chunk's returns (a run already kept keeps its first, identical, copy)."""
        for k, row in enumerate(chunk.rows.tolist()):
            self.put(row, chunk.values[k])

    def put(self, row: int, values: np.ndarray) -> bool:
        """Keep run ``row``'s returns if there is room; True when kept (or already)."""
        if row in self._slots:
            return True
        if len(self._slots) >= len(self.values) or len(values) != self.plan.periods:
            return False
        self.values[len(self._slots)] = values
        self._slots[row] = len(self._slots)
        return True

    def rows(self) -> np.ndarray:
        """The runs kept, in grid order."""
        return np.array(sorted(self._slots), dtype=np.int64)

    def matrix(self, rows: Iterable[int], dtype: type[np.floating[Any]] = np.float64) -> np.ndarray:
        """A (periods, runs) matrix of the returns of ``rows`` (each kept), a new array of ``dtype``."""
        slots = [self._slots[row] for row in rows]
        return self.values[slots].T.astype(dtype)

    def save(self, folder: str | os.PathLike[str]) -> Path | None:
        """Write the kept returns to ``folder/returns.npz``, atomically (a temporary, then a
        rename). A failed write is a warning (the rows are saved; the returns can be recomputed)."""
        path = Path(folder) / RETURNS_FILE
        rows = self.rows()
        temporary = path.with_name(path.name + ".tmp")
        try:
            with open(temporary, "wb") as file:
                np.savez(file, rows=rows, returns=self.values[[self._slots[r] for r in rows.tolist()]],
                         layout=np.array([self.plan.bars, self.plan.periods, self.plan.bars_per_period]))
            os.replace(temporary, path)
        except OSError as error:
            _warn(f"the runs' returns could not be saved to {str(path)!r} ({error.strerror or error});"
                  " credibility() recomputes them after a load")
            return None
        return path

    def load(self, folder: str | os.PathLike[str]) -> int:
        """Take the returns saved in ``folder`` that this plan keeps; returns how many.

        A missing or unreadable file, or one of other periods, gives none: those
        runs' returns are recomputed when needed.
        """
        try:
            with np.load(Path(folder) / RETURNS_FILE) as saved:
                layout, rows, values = saved["layout"].tolist(), saved["rows"], saved["returns"]
        except (OSError, ValueError, KeyError):
            return 0
        plan = self.plan
        if layout != [plan.bars, plan.periods, plan.bars_per_period]:
            return 0
        return sum(self.put(row, values[k]) for k, row in enumerate(rows.tolist())
                   if 0 <= row < plan.runs and plan.wants(row))


def recompute(spec: SweepSpec, data: Any, rows: Iterable[int]) -> np.ndarray:
    """The returns of ``rows`` run again here, float32 ``(len(rows), periods)``: the same
    bits as the engines', since a run is deterministic."""
    plan = spec.returns
    if plan is None:
        raise SweepError("this sweep keeps no returns (returns_budget=0)")
    rows = list(rows)
    prepared = PreparedData.from_frame(data)
    out = np.empty((len(rows), plan.periods), dtype=np.float32)
    for k, row in enumerate(rows):
        simulate_stats(spec.plan.strategy_at(row), prepared, spec.settings, spec.plan.seed_at(row),
                       returns_out=out[k], bars_per_period=plan.bars_per_period)
    return out


def market_returns(data: Any, plan: ReturnsPlan) -> np.ndarray:
    """Buy and hold's returns on the same periods: the close compounded from the first close."""
    close = PreparedData.from_frame(data).close
    return period_returns(close, float(close[0]), plan.bars_per_period)

"""The runs of a sweep: :class:`Plan`, the record that planning makes and a sweep runs.

:func:`~nbbacktest.parallel.grid.plan_sweep` and
:func:`~nbbacktest.parallel.grid.plan_instances` build it (every argument is
checked there); the sweep runs its runs and stores their rows in its order.
Nothing here imports ipyparallel.

Run order ("grid order"): the cartesian product of the grid's values in the order
the grid lists its names (the first name varies slowest, like
``itertools.product``), then every symbol for each parameter point (symbols vary
fastest). Results are stored in this order whatever order they arrive in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.backtest import RunSeeds
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import SweepError

__all__ = ["Plan"]


@dataclass(frozen=True, eq=False)
class Plan:
    """The runs of a sweep (or of ``run_many``), in grid order.

    Run ``i`` is ``class_at(i)(**params(i))`` on symbol ``symbols[i]`` with seed
    ``seed_at(i)``. Per-run data is kept in flat lists of tuples (no dict per run),
    so 100,000 runs stay a few megabytes; the strategy classes are stored once.

    Attributes
    ----------
    classes : tuple of Strategy subclasses
        The distinct strategy classes, in order of first appearance. One class for
        a sweep; ``run_many`` over instances of several classes gives several.
    param_names : tuple of tuple of str
        ``param_names[k]``: every declared parameter of ``classes[k]``, in
        declaration order.
    values : list of tuple
        One tuple per run: all of its class's parameter values (defaults filled
        in), in ``param_names`` order. Runs of one point on several symbols share
        the same tuple object.
    symbols : list of str or None
        The symbol of each run; None for single-frame data.
    seed : int
        The sweep's seed. Run ``i``'s own seed, ``seed_at(i)``, is
        ``derive_seed(seed, params(i), symbols[i])``: it depends on the run alone,
        not on the rest of the grid. Engines derive the seeds of the runs they
        run; ``seeds`` lists them all (derived on first use).
    grid_size : int
        Runs of the grid before ``where`` and sampling (points x symbols).
    class_index : numpy.ndarray or None
        ``classes`` index of each run (int32), or None when there is one class.
    universe : tuple of str or None
        The symbols the runs were expanded over, or None.
    grid : tuple of dict or None
        The grid as planned: one dict per sub-grid, each name's validated values
        (a tuple); None for ``run_many``. For the run card; not part of the identity.
    where : str or None
        The ``where`` filter as text (its expression, or a callable's source), or None.
    sample : int or None
        ``n``, the number of points sampled, or None.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast, slow = 10, 30
    >>> from nbbacktest.parallel.grid import plan_sweep
    >>> plan = plan_sweep(SmaCross, {"fast": [5, 10], "slow": 40}, symbols=["A", "B"])
    >>> len(plan), plan.params(1), plan.symbols[1]
    (4, {'fast': 5, 'slow': 40}, 'B')
    >>> plan.strategy_at(2)
    SmaCross(fast=10, slow=40)
    """

    classes: tuple[type[Strategy], ...]
    param_names: tuple[tuple[str, ...], ...]
    values: list[tuple]
    symbols: list[str | None]
    seed: int
    grid_size: int
    class_index: np.ndarray | None = None
    universe: tuple[str, ...] | None = None
    # What the plan was made from, for the run card (a plan pickled before these
    # fields existed reads them as None, the class defaults).
    grid: tuple[dict[str, tuple[Any, ...]], ...] | None = None
    where: str | None = None
    sample: int | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_mixed(self) -> bool:
        """True when the runs use more than one strategy class."""
        return len(self.classes) > 1

    @property
    def strategy(self) -> type[Strategy]:
        """The strategy class of every run; SweepError when the plan mixes classes."""
        self._require_single("strategy")
        return self.classes[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names of every run; SweepError when the plan mixes classes."""
        self._require_single("names")
        return self.param_names[0]

    def class_at(self, i: int) -> type[Strategy]:
        """The strategy class of run ``i``."""
        return self.classes[self._class_number(i)]

    def names_at(self, i: int) -> tuple[str, ...]:
        """The parameter names of run ``i``, in declaration order."""
        return self.param_names[self._class_number(i)]

    def params(self, i: int) -> dict[str, Any]:
        """The parameter values of run ``i`` as a dict, in declaration order."""
        return dict(zip(self.param_names[self._class_number(i)], self.values[i]))

    def seed_at(self, i: int) -> int:
        """The seed of run ``i``."""
        return RunSeeds(self.seed)(self.names_at(i), self.values[i], self.symbols[i])

    @functools.cached_property
    def seeds(self) -> list[int]:
        """The seed of every run, in run order."""
        seed_of = RunSeeds(self.seed)
        if self.class_index is None:
            names = self.param_names[0]
            return [seed_of(names, v, s) for v, s in zip(self.values, self.symbols)]
        return [seed_of(self.param_names[k], v, s)
                for k, v, s in zip(self.class_index.tolist(), self.values, self.symbols)]

    def strategy_at(self, i: int) -> Strategy:
        """The strategy instance of run ``i`` (values were validated while planning)."""
        return self.class_at(i)._from_values(self.params(i))

    def frame(self) -> pd.DataFrame:
        """One row per run, on a RangeIndex.

        One class: a column per declared parameter. Several classes: a
        ``strategy`` column (class name) and a ``params`` column (repr of the
        parameter dict). Either way a ``symbol`` column follows when the plan has
        symbols.
        """
        columns: dict[str, Any] = {}
        if self.is_mixed:
            columns["strategy"] = [self.class_at(i).__name__ for i in range(len(self))]
            columns["params"] = [repr(self.params(i)) for i in range(len(self))]
        else:
            names = self.param_names[0]
            by_column = list(zip(*self.values)) if self.values else [()] * len(names)
            columns.update(zip(names, (list(column) for column in by_column)))
        if self.universe is not None:
            columns["symbol"] = list(self.symbols)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self)))

    def subset(self, rows: Sequence[int] | np.ndarray) -> Plan:
        """A plan of the given runs only, in the order given, renumbered from 0.

        ``grid_size``, ``universe``, ``grid``, ``where`` and ``sample`` are kept. The
        caller keeps the mapping from new to old row numbers (``rows`` itself), e.g.
        to resume a sweep.
        """
        index = np.asarray(rows)
        if index.size == 0:
            index = index.astype(np.intp)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"rows must be a sequence of int run numbers, got {rows!r}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IndexError(f"rows contains {bad}, outside 0..{len(self) - 1}")
        picked = index.tolist()
        return Plan(
            classes=self.classes,
            param_names=self.param_names,
            values=[self.values[r] for r in picked],
            symbols=[self.symbols[r] for r in picked],
            seed=self.seed,
            grid_size=self.grid_size,
            class_index=None if self.class_index is None else self.class_index[index],
            universe=self.universe,
            grid=self.grid,
            where=self.where,
            sample=self.sample,
        )

    def __repr__(self) -> str:
        kinds = ", ".join(cls.__name__ for cls in self.classes)
        per = f" ({len(self.universe)} symbols)" if self.universe is not None else ""
        return f"<Plan {kinds}: {len(self)} runs{per}, grid of {self.grid_size}>"

    def _class_number(self, i: int) -> int:
        return 0 if self.class_index is None else int(self.class_index[i])

    def _require_single(self, what: str) -> None:
        if self.is_mixed:
            kinds = ", ".join(cls.__name__ for cls in self.classes)
            raise SweepError(
                f"Plan.{what} is undefined: the plan mixes {len(self.classes)} strategy"
                f" classes ({kinds}); use class_at(i), names_at(i) or params(i)"
            )

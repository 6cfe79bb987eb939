"""What a sweep computes, in one frozen value: :class:`SweepSpec`.

The plan (every run's strategy class, params, symbol and seed), the simulation
settings, the metric and its direction, what to do at an error, when a run counts
as slow, and the stat schema. Everything else is derived from it: its identity
(which checkpoint it may resume), its readable summary (a checkpoint's
``spec.json``), the job the engines cache, and what a task carries per point.

Examples
--------
>>> from nbbacktest.engine.examples import SmaCross
>>> from nbbacktest.engine.backtest import Settings
>>> from nbbacktest.parallel.grid import plan_sweep
>>> spec = SweepSpec(plan_sweep(SmaCross, {"fast": [5, 10]}), Settings(), metric="return_pct")
>>> spec.summary()["runs"], len(spec.identity())
(2, 32)
>>> spec.point_specs([1])
[(1, 0, (10, 30), None)]
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from nbbacktest.engine.backtest import Settings
from nbbacktest.errors import SweepError, did_you_mean
from nbbacktest.parallel import worker
from nbbacktest.parallel.grid import Plan
from nbbacktest.parallel.rows import StatSchema
from nbbacktest.parallel.run_returns import ReturnsPlan


def check_metric(metric: Any, maximize: Any, schema: StatSchema | None = None) -> None:
    """Raise a clear error unless ``metric`` is a numeric stat and ``maximize`` a bool.

    Examples
    --------
    >>> check_metric("sharp", True)
    Traceback (most recent call last):
    ...
    nbbacktest.errors.SweepError: metric 'sharp' is not a numeric stat. Did you mean: sharpe? ...
    """
    numeric = (schema or StatSchema.current()).numeric
    if metric not in numeric:
        raise SweepError(f"metric {metric!r} is not a numeric stat.{did_you_mean(metric, numeric)}"
                         f" Valid metrics: {', '.join(numeric)}")
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be True or False, got {maximize!r}")


def check_min_trades(min_trades: Any) -> int:
    """``min_trades`` as an int >= 0, or an error naming it.

    Examples
    --------
    >>> check_min_trades(5)
    5
    >>> check_min_trades(-1)
    Traceback (most recent call last):
    ...
    nbbacktest.errors.SweepError: min_trades must be a whole number of trades, 0 or more, got -1
    """
    if isinstance(min_trades, (bool, np.bool_)) or not isinstance(min_trades, (int, np.integer)):
        raise TypeError(f"min_trades must be an int (a number of trades, 0 for no minimum),"
                        f" got {type(min_trades).__name__} {min_trades!r:.60}")
    if min_trades < 0:
        raise SweepError(f"min_trades must be a whole number of trades, 0 or more, got {min_trades!r}")
    return int(min_trades)


def check_warn_after(warn_after: Any) -> float:
    """``warn_after`` as seconds, or a SweepError naming it."""
    if isinstance(warn_after, bool) or not isinstance(warn_after, (int, float)) or not warn_after > 0:
        raise SweepError(f"warn_after must be a positive number of seconds, got {warn_after!r}")
    return float(warn_after)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A sweep's definition: plan, settings, metric and the rules of the run.

    Checked when made: an unknown metric, a ``maximize`` or ``stop_on_error``
    that is no bool, or a ``warn_after`` that is no positive number raise here.
    """

    plan: Plan
    settings: Settings
    metric: str = "sharpe"
    maximize: bool = True
    #: Stop at the first failing run.
    stop_on_error: bool = False
    #: Seconds after which a run still going is reported (a ``PointSlow`` event).
    warn_after: float = 3600.0
    #: The stats each run gives and how they are kept.
    schema: StatSchema = dataclasses.field(default_factory=StatSchema.current)
    #: Runs with fewer trades stay in the table (``too_few_trades``) but never
    #: become the best. 0: no minimum. A spec pickled before this field reads 0.
    min_trades: int = 0
    #: ``(symbol, bar)`` pairs: the bar a symbol's runs trade from, the bars before
    #: being warm-up history (``PreparedData.trading_from``; walk-forward windows).
    #: Empty: every run trades from the first bar. A spec pickled before reads ().
    trade_starts: tuple[tuple[str, int], ...] = ()
    #: Which runs keep their returns for ``credibility()``, on which periods
    #: (:mod:`~nbbacktest.parallel.run_returns`); None: none. Not part of the
    #: identity (the table does not depend on it). A spec pickled before reads None.
    returns: ReturnsPlan | None = None

    def __post_init__(self) -> None:
        check_metric(self.metric, self.maximize, self.schema)
        object.__setattr__(self, "min_trades", check_min_trades(self.min_trades))
        if not isinstance(self.stop_on_error, (bool, np.bool_)):
            raise TypeError(f"stop_on_error must be True or False, got {self.stop_on_error!r}")
        object.__setattr__(self, "warn_after", check_warn_after(self.warn_after))
        object.__setattr__(self, "maximize", bool(self.maximize))
        object.__setattr__(self, "stop_on_error", bool(self.stop_on_error))

    @classmethod
    def from_state(cls, state: Any) -> SweepSpec:
        """The spec a checkpoint's ``spec.pkl`` holds (a dict of its fields before format 3)."""
        if isinstance(state, cls):
            return state
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__} is not a sweep's spec")
        fields = ("plan", "settings", "metric", "maximize", "stop_on_error", "warn_after")
        missing = [key for key in fields if key not in state]
        if missing:
            raise TypeError(f"it has no {', '.join(map(repr, missing))}")
        if not isinstance(state["plan"], Plan):
            raise TypeError("it has a plan that is no Plan")
        return cls(**{key: state[key] for key in fields}, min_trades=state.get("min_trades", 0))

    def identity(self) -> str:
        """A digest of what the sweep computes (classes, every run's params, symbol, seed, settings).

        Two sweeps with the same identity on the same data give the same table, so
        a checkpoint of one can resume the other. ``min_trades`` counts only when
        set (above 0), so a sweep without it keeps the identity it always had.
        """
        plan = self.plan
        digest = hashlib.blake2b(digest_size=16)
        for cls, names in zip(plan.classes, plan.param_names):
            digest.update(f"{cls.__module__}.{cls.__qualname__}{names!r}".encode())
        digest.update(repr(self.settings).encode())
        if self.min_trades:
            digest.update(f"min_trades={self.min_trades}".encode())
        if self.trade_starts:
            digest.update(f"trade_starts={self.trade_starts!r}".encode())
        index = plan.class_index
        for i in range(len(plan)):
            klass = 0 if index is None else int(index[i])
            digest.update(f"{klass}|{plan.values[i]!r}|{plan.symbols[i]!r}|{plan.seeds[i]}\n".encode())
        return digest.hexdigest()

    def summary(self, data_key: str | None = None) -> dict[str, Any]:
        """The sweep for people (a checkpoint's ``spec.json``): strategy, runs, settings, ..."""
        plan = self.plan
        return {
            "strategy": self.strategy_names(),
            "runs": len(plan),
            "grid_size": plan.grid_size,
            "symbols": None if plan.universe is None else list(plan.universe),
            "metric": self.metric,
            "maximize": self.maximize,
            **({"min_trades": self.min_trades} if self.min_trades else {}),
            **({"trade_starts": dict(self.trade_starts)} if self.trade_starts else {}),
            "settings": dataclasses.asdict(self.settings),
            "data": data_key,
            "identity": self.identity(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def strategy_names(self) -> str:
        """The strategy classes by module and name."""
        return ", ".join(f"{c.__module__}.{c.__qualname__}" for c in self.plan.classes)

    def cost_key(self, data_key: str) -> str:
        """What a run's cost depends on: the data, the classes and the settings."""
        return "|".join([data_key, self.strategy_names(), repr(self.settings)])

    def job(self, data_key: str) -> worker.Job:
        """What every run shares on an engine: classes, param names, settings, data key, rules."""
        plan = self.plan
        return worker.Job(plan.classes, plan.param_names, self.settings, data_key, self.warn_after,
                          self.stop_on_error, plan.seed, self.schema, dict(self.trade_starts),
                          self.returns)

    def point_specs(self, rows: Iterable[int]) -> list[worker.PointSpec]:
        """What a task carries for each row: (row, class index, values, symbol).

        No seed: the job carries the sweep's seed and each point's own is derived
        where it runs, so a big grid's seeds are not all derived before the first task.
        """
        plan = self.plan
        index = plan.class_index
        values, symbols = plan.values, plan.symbols
        if index is None:
            return [(r, 0, values[r], symbols[r]) for r in rows]
        return [(r, int(index[r]), values[r], symbols[r]) for r in rows]

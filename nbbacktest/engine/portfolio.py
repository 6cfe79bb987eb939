"""Portfolio strategies: target weights across a universe, or scores that become weights.

A :class:`PortfolioStrategy` decides, at each bar's close, a target weight per
symbol (a fraction of equity, negative short): either directly, in
``weights(universe)``, or through ``scores(universe)``, a score per time x
symbol that :func:`construct_weights` turns into weights (long the top ``long``
fraction, short the bottom ``short`` fraction, equal or score-proportional,
scaled to ``gross``, optionally dollar or beta neutral). The simulator is
:mod:`nbbacktest.engine.portfolio_sim`; its rules are written in the README.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from nbbacktest.engine.data import format_timestamp
from nbbacktest.engine.params import Param
from nbbacktest.engine.strategy import Strategy
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import DataError, ParamError, did_you_mean

__all__ = [
    "CONSTRUCTION_PARAMS", "PortfolioStrategy", "check_portfolio_params", "construct_weights",
    "decision_bars", "target_frame",
]

#: The parameters of the built-in construction from scores (dropped for ``weights`` strategies).
CONSTRUCTION_PARAMS = ("long", "short", "weighting", "gross", "neutral")
_PORTFOLIO_NAMES = frozenset({"universe", "weights", "scores", "benchmark"})
#: Trailing bars of daily returns a symbol's beta to the benchmark is estimated from
#: (about six months of days): long enough to be stable, short enough to move.
BETA_WINDOW = 126
#: Bars of history a beta needs before it counts; before that a symbol's beta is 1.
BETA_MIN_BARS = 20
_REBALANCE_RULES = {"D": None, "W": "W", "M": "M", "Q": "Q", "Y": "Y"}
# weights a hair above the leverage limit come from float arithmetic, not intent
_WEIGHT_TOLERANCE = 1e-9


class PortfolioStrategy(Strategy):
    """Base class of strategies that hold many symbols at once, with one cash balance.

    Subclasses declare parameters as any :class:`~nbbacktest.Strategy` does and define
    either ``weights(universe)``, a DataFrame (time x symbol) of target weights
    decided at each close, or ``scores(universe)``, a score per time x symbol that
    the built-in construction turns into weights with these parameters:

    - ``long``, ``short``: the fraction of the ranked symbols held long (highest
      scores) and short (lowest); ``long + short <= 1``.
    - ``weighting``: ``"equal"``, or ``"score"`` (in proportion to the distance of
      the score from the day's median).
    - ``gross``: the sum of absolute weights (1 = fully invested).
    - ``neutral``: ``"none"`` (each leg sized by its share of the raw weights),
      ``"dollar"`` (each leg ``gross / 2``) or ``"beta"`` (legs sized so that the
      portfolio's beta to :meth:`benchmark` is 0).

    ``rebalance`` says when positions move: ``"change"`` (default) trades a symbol
    only when its target weight changes, as a single-instrument strategy never
    rebalances a held position; ``"D"``, ``"W"``, ``"M"``, ``"Q"``, ``"Y"`` or a
    bar count such as ``"21"`` decide weights at the last bar of each period (or
    every N bars) only, and reset every symbol to its target there.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Momentum(nbb.PortfolioStrategy):
    ...     lookback = nbb.Param(126, low=5, high=500)
    ...     def scores(self, universe):
    ...         return universe.close.pct_change(self.lookback, fill_method=None)
    >>> Momentum(lookback=63, long=0.1, short=0.1).param_values["short"]
    0.1
    >>> list(Momentum.params())
    ['long', 'short', 'weighting', 'gross', 'neutral', 'rebalance', 'lookback']
    >>> class Fixed(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.5
    >>> list(Fixed.params())
    ['rebalance']
    """

    long = Param(0.2, low=0.0, high=1.0, doc="fraction of ranked symbols held long (top scores)")
    short = Param(0.0, low=0.0, high=1.0, doc="fraction held short (bottom scores)")
    weighting = Param("equal", choices=("equal", "score"), doc="equal or score-proportional weights")
    gross = Param(1.0, low=0.0, doc="sum of absolute weights")
    neutral = Param("none", choices=("none", "dollar", "beta"), doc="leg sizing: none, dollar or beta")
    rebalance = Param("change", doc="change, D, W, M, Q, Y or every N bars ('21')")

    _mode: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        clash = sorted(cls._params.keys() & _PORTFOLIO_NAMES)
        if clash:
            raise TypeError(f"PortfolioStrategy {cls.__name__!r}: parameter name(s) {', '.join(clash)}"
                            " clash with the PortfolioStrategy API; rename them")
        by_weights = cls.weights is not PortfolioStrategy.weights
        by_scores = cls.scores is not PortfolioStrategy.scores
        if by_weights and by_scores:
            raise TypeError(f"PortfolioStrategy {cls.__name__!r} defines both weights() and scores():"
                            " define one (scores are turned into weights by the construction)")
        cls._mode = "weights" if by_weights else "scores" if by_scores else None
        if by_weights:
            # The construction's parameters mean nothing to a strategy that sets weights
            # itself, unless the subclass declares one of them again.
            own = {name for klass in cls.__mro__ if issubclass(klass, PortfolioStrategy)
                   and klass is not PortfolioStrategy for name in vars(klass)}
            cls._params = {k: v for k, v in cls._params.items()
                           if k not in CONSTRUCTION_PARAMS or k in own}
        # Parameters of the base first, then the subclass's, as declared.
        base = [k for k in PortfolioStrategy._params if k in cls._params]
        cls._params = {**{k: cls._params[k] for k in base},
                       **{k: v for k, v in cls._params.items() if k not in base}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self) is PortfolioStrategy:
            raise TypeError("PortfolioStrategy is a base class: subclass it and define weights()"
                            " or scores()")
        super().__init__(*args, **kwargs)

    def weights(self, universe: Universe) -> pd.DataFrame:
        """Target weight per time x symbol, decided at each bar's close (NaN = 0)."""
        raise NotImplementedError

    def scores(self, universe: Universe) -> pd.DataFrame:
        """Score per time x symbol (higher = more attractive; NaN = not ranked)."""
        raise NotImplementedError

    def benchmark(self, universe: Universe) -> pd.Series:
        """Bar returns of the benchmark ``neutral="beta"`` hedges: by default the
        equal-weighted mean of the listed symbols' close-to-close returns."""
        return universe.returns.mean(axis=1)


def check_portfolio_params(values: dict[str, Any], leverage: float | None, owner: str) -> None:
    """Raise ParamError when one parameter set cannot run: checked before any engine sees it.

    Examples
    --------
    >>> check_portfolio_params({"long": 0.6, "short": 0.5}, None, "Momentum")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nbbacktest.errors.ParamError: Momentum: long + short = 1.1 is more than 1 (...)
    """
    long, short = values.get("long", 0.0), values.get("short", 0.0)
    if long + short > 1 + 1e-12:
        raise ParamError(f"{owner}: long + short = {long + short:g} is more than 1 (the fractions of"
                         " ranked symbols held long and short may not overlap)")
    gross = values.get("gross")
    limit = _limit(leverage)
    if gross is not None and gross > limit * (1 + _WEIGHT_TOLERANCE):
        raise ParamError(f"{owner}: gross={gross:g} is beyond the leverage limit of {limit:g};"
                         f" pass leverage={gross:g} to allow it")
    if values.get("neutral", "none") != "none" and "long" in values and (long <= 0 or short <= 0):
        raise ParamError(f"{owner}: neutral={values['neutral']!r} needs both legs (long > 0 and"
                         f" short > 0), got long={long:g}, short={short:g}")
    rebalance_rule(values.get("rebalance", "change"), owner)


def rebalance_rule(rule: Any, owner: str = "rebalance") -> str | int | None:
    """``None`` (on change), a pandas period code, or a bar count; ParamError otherwise.

    Examples
    --------
    >>> rebalance_rule("change"), rebalance_rule("M"), rebalance_rule("21")
    (None, 'M', 21)
    """
    text = str(rule).strip()
    if text == "change":
        return None
    if text.upper() in _REBALANCE_RULES:
        return text.upper() if text.upper() != "D" else 1
    if re.fullmatch(r"[1-9][0-9]*", text):
        return int(text)
    raise ParamError(f"{owner}: rebalance={rule!r} is not a rule; use 'change', 'D', 'W', 'M', 'Q', 'Y'"
                     " or a bar count such as '21'")


def decision_bars(index: pd.DatetimeIndex, rule: Any, fill: str) -> np.ndarray | None:
    """The bars whose close decides new weights (all of them for ``"change"``: None).

    A period's decision is its last bar (the next bar starts another period); a
    bar count decides every N bars from the first. A decision needs a fill after
    it, so with ``fill="next_open"`` the last bar never decides. A rule that
    never fires on ``index`` is a DataError.

    Examples
    --------
    >>> index = pd.bdate_range("2024-01-01", periods=70)
    >>> index[decision_bars(index, "M", "next_open")].strftime("%m-%d").tolist()
    ['01-31', '02-29', '03-29']
    """
    kind = rebalance_rule(rule)
    n = len(index)
    if kind is None:
        return None
    if isinstance(kind, int):
        bars = np.arange(0, n, kind)
    else:
        periods = index.tz_localize(None).to_period(kind) if index.tz is not None else index.to_period(kind)
        codes = np.asarray(periods.asi8)
        bars = np.flatnonzero(codes[1:] != codes[:-1])
    if fill == "next_open":
        bars = bars[bars < n - 1]
    if not len(bars):
        span = f"{format_timestamp(index[0])} to {format_timestamp(index[-1])}" if n else "no bars"
        raise DataError(f"rebalance={rule!r} never fires on this universe ({n} bars, {span}): no"
                        " period ends inside it; choose a shorter rule")
    return bars.astype(np.intp)


def target_frame(
    frame: Any, universe: Universe, name: str, *, allow_nan: bool = True
) -> np.ndarray:
    """A strategy's weights or scores as a float64 ``(bars, symbols)`` array on the universe.

    A DataFrame may hold a subset of the symbols (the others get NaN) and a subset
    of the bar times: for weights, a decision holds until the next row (forward
    filled); an array must have the universe's exact shape. Unknown symbols or
    times, infinite values or a wrong shape are a DataError naming them.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> u = nbb.load_sample("universe")
    >>> from nbbacktest.engine.universe import as_universe
    >>> target_frame(as_universe(u).close * 0 + 0.1, as_universe(u), "weights").shape
    (2500, 10)
    """
    bars, count = universe.shape
    if isinstance(frame, pd.Series):
        raise DataError(f"{name} returned a Series; return a DataFrame with one column per symbol"
                        " (time x symbol)")
    if isinstance(frame, np.ndarray):
        if frame.shape != (bars, count):
            raise DataError(f"{name} returned an array of shape {frame.shape}; the universe is"
                            f" {bars} bars x {count} symbols")
        values = np.array(frame, dtype=np.float64)
    elif isinstance(frame, pd.DataFrame):
        values = _aligned(frame, universe, name)
    else:
        raise TypeError(f"{name} must return a DataFrame (time x symbol), got {type(frame).__name__}")
    bad = np.isinf(values)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise DataError(f"{name} has {int(bad.sum())} infinite value(s), first for"
                        f" {universe.symbols[j]!r} at {format_timestamp(universe.index[t])};"
                        " use NaN for no position or no score")
    if not allow_nan:
        np.nan_to_num(values, copy=False, nan=0.0)
    return values


def _aligned(frame: pd.DataFrame, universe: Universe, name: str) -> np.ndarray:
    columns: pd.Index = pd.Index(frame.columns)
    unknown = [c for c in columns if c not in universe.symbols]
    if unknown:
        known = [str(s) for s in universe.symbols]
        raise DataError(f"{name} has {len(unknown)} column(s) not in the universe, first"
                        f" {unknown[0]!r}.{did_you_mean(str(unknown[0]), known)}")
    if columns.has_duplicates:
        raise DataError(f"{name} has the column {columns[columns.duplicated()][0]!r} more than once")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"{name} must be indexed by the universe's bar times, got a"
                        f" {type(index).__name__}")
    same_index = index.equals(universe.index)
    if not same_index:
        rows = universe.index.get_indexer(index)
        if (rows < 0).any():
            first = index[int(np.flatnonzero(rows < 0)[0])]
            raise DataError(f"{name} has {int((rows < 0).sum())} time(s) that are not bars of the"
                            f" universe, first {format_timestamp(first)}; compute it from the"
                            " universe you were given")
    try:
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise DataError(f"{name} must hold numbers; got dtypes"
                        f" {sorted({str(d) for d in frame.dtypes})}") from None
    out = np.full(universe.shape, np.nan)
    positions: np.ndarray = np.asarray(universe.symbols.get_indexer(columns))
    if same_index:
        out[:, positions] = values
        return out
    # Rows on some bar times only: each decision holds until the next one.
    found = universe.index.get_indexer(index)
    order = np.argsort(found, kind="stable")
    found, values = found[order], values[order]
    held = np.searchsorted(found, np.arange(universe.shape[0]), side="right") - 1
    decided = np.flatnonzero(held >= 0)
    out[np.ix_(decided, positions)] = values[held[decided]]
    return out


def check_weights(weights: np.ndarray, universe: Universe, leverage: float | None, name: str) -> None:
    """Gross exposure (sum of absolute weights) within the leverage limit at every bar."""
    gross = np.abs(weights).sum(axis=1)
    limit = _limit(leverage)
    over = np.flatnonzero(gross > limit * (1 + _WEIGHT_TOLERANCE))
    if len(over):
        t = int(over[0])
        raise DataError(f"{name} has a gross exposure (sum of |weights|) of {gross[t]:.4g} at"
                        f" {format_timestamp(universe.index[t])}, beyond the leverage limit of"
                        f" {limit:g}, on {len(over)} bar(s); pass leverage={float(gross.max()):.4g}"
                        " or scale the weights down")


def construct_weights(
    scores: np.ndarray, tradable: np.ndarray, *, long: float, short: float, weighting: str,
    gross: float, neutral: str, betas: np.ndarray | None = None,
) -> np.ndarray:
    """Weights from scores, row by row (every row at once).

    In each row the symbols with a finite score that can trade are ranked. With
    ``n`` of them, ``floor(long * n)`` of the highest go long and
    ``floor(short * n)`` of the lowest go short (at least one per leg when its
    fraction is > 0 and ``n >= 2``; ties keep column order). Within a leg weights
    are equal, or in proportion to ``|score - median|`` (``weighting="score"``).
    Legs are then sized to ``gross`` in total: by their raw weights
    (``neutral="none"``; equal-weighted legs of equal size come out dollar
    neutral), half each (``"dollar"``), or so that ``sum(w * beta) = 0``
    (``"beta"``; a missing beta counts as 1).

    Examples
    --------
    >>> s = np.array([[3.0, 1.0, 2.0, np.nan]])
    >>> construct_weights(s, np.ones((1, 4), bool), long=0.34, short=0.34,
    ...                   weighting="equal", gross=1.0, neutral="none").tolist()
    [[0.5, -0.5, 0.0, 0.0]]
    """
    bars, count = scores.shape
    valid = np.isfinite(scores) & tradable
    n = valid.sum(axis=1)
    k_long = _leg_size(long, n)
    k_short = _leg_size(short, n)
    overlap = k_long + k_short > n
    if overlap.any():
        k_long = np.where(overlap, np.floor(long * n + 1e-9).astype(np.intp), k_long)
        k_short = np.where(overlap, np.floor(short * n + 1e-9).astype(np.intp), k_short)
    rows = np.arange(bars)[:, None]
    columns = np.arange(count)[None, :]
    high_first = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")
    rank_high = np.empty_like(high_first)
    rank_high[rows, high_first] = columns
    in_long = valid & (rank_high < k_long[:, None])
    # The short leg ranks the symbols not held long: a tie across both legs (equal
    # scores) must not leave the short leg without its k_short symbols.
    low_first = np.argsort(np.where(valid & ~in_long, scores, np.inf), axis=1, kind="stable")
    rank_low = np.empty_like(low_first)
    rank_low[rows, low_first] = columns
    in_short = valid & ~in_long & (rank_low < k_short[:, None])
    if weighting == "score":
        # the median of the ranked scores, row by row; a row with none ranked has none
        # (nanmedian would warn "All-NaN slice" for it)
        median = np.zeros((bars, 1))
        some = valid.any(axis=1)
        if some.any():
            median[some] = np.nanmedian(np.where(valid[some], scores[some], np.nan), axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            distance = np.abs(np.nan_to_num(scores - median))
        raw_long = np.where(in_long, distance, 0.0)
        raw_short = np.where(in_short, distance, 0.0)
        # a leg of identical scores has no distance to weigh by: equal weights
        flat_long = (raw_long.sum(axis=1) == 0)[:, None] & in_long
        flat_short = (raw_short.sum(axis=1) == 0)[:, None] & in_short
        raw_long = np.where(flat_long, 1.0, raw_long)
        raw_short = np.where(flat_short, 1.0, raw_short)
    elif weighting == "equal":
        raw_long, raw_short = in_long.astype(float), in_short.astype(float)
    else:
        raise ParamError(f"weighting must be 'equal' or 'score', got {weighting!r}")
    sum_long = raw_long.sum(axis=1)
    sum_short = raw_short.sum(axis=1)
    total = sum_long + sum_short
    with np.errstate(all="ignore"):
        unit_long = np.where(sum_long[:, None] > 0, raw_long / sum_long[:, None], 0.0)
        unit_short = np.where(sum_short[:, None] > 0, raw_short / sum_short[:, None], 0.0)
        if neutral == "none":
            size_long = np.where(total > 0, gross * sum_long / total, 0.0)
            size_short = np.where(total > 0, gross * sum_short / total, 0.0)
        elif neutral in ("dollar", "beta"):
            both = (sum_long > 0) & (sum_short > 0)
            size_long = np.where(both, gross / 2, 0.0)
            size_short = np.where(both, gross / 2, 0.0)
            if neutral == "beta":
                beta = np.ones((bars, count)) if betas is None else np.where(np.isfinite(betas), betas, 1.0)
                beta_long = (unit_long * beta).sum(axis=1)
                beta_short = (unit_short * beta).sum(axis=1)
                hedge = both & (beta_long + beta_short > 0) & (beta_long > 0) & (beta_short > 0)
                size_long = np.where(hedge, gross * beta_short / (beta_long + beta_short), size_long)
                size_short = np.where(hedge, gross * beta_long / (beta_long + beta_short), size_short)
        else:
            raise ParamError(f"neutral must be 'none', 'dollar' or 'beta', got {neutral!r}")
    return unit_long * size_long[:, None] - unit_short * size_short[:, None]


def rolling_betas(returns: np.ndarray, benchmark: np.ndarray, window: int = BETA_WINDOW) -> np.ndarray:
    """Each symbol's beta to the benchmark over the trailing ``window`` bars (NaN early).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> m = rng.normal(0, 0.01, 300)
    >>> r = np.column_stack([2 * m, 0.5 * m])
    >>> rolling_betas(r, m)[-1].round(6).tolist()
    [2.0, 0.5]
    """
    frame = pd.DataFrame(returns)
    market = pd.Series(benchmark)
    both = frame.notna() & market.notna().to_numpy()[:, None]
    x = pd.DataFrame(np.where(both, market.to_numpy()[:, None], np.nan))
    y = frame.where(both)
    def mean(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.rolling(window, min_periods=BETA_MIN_BARS).mean()

    mean_x, mean_y = mean(x), mean(y)
    cov = mean(x * y) - mean_x * mean_y
    var = mean(x * x) - mean_x * mean_x
    with np.errstate(all="ignore"):
        return (cov / var.where(var > 0)).to_numpy()


def _leg_size(fraction: float, n: np.ndarray) -> np.ndarray:
    k = np.floor(fraction * n + 1e-9).astype(np.intp)
    if fraction > 0:
        k = np.where((k == 0) & (n >= 2), 1, k)
    return k


def _limit(leverage: float | None) -> float:
    return 1.0 if leverage is None else max(1.0, float(leverage))


def is_portfolio(strategy: Any) -> bool:
    """True for a PortfolioStrategy instance or subclass."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return isinstance(cls, type) and issubclass(cls, PortfolioStrategy)

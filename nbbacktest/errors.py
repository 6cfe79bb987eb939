"""Errors and warnings raised by nbbacktest.

Every error derives from :class:`NbbacktestError` and also from the built-in
exception a Python user would expect (``ValueError`` for bad values, ``TypeError``
for unknown parameters), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class NbbacktestError(Exception):
    """Base class of every error raised by nbbacktest."""


class DataError(NbbacktestError, ValueError):
    """Market data or strategy signals are malformed."""


class ParamError(NbbacktestError, ValueError):
    """A strategy parameter has the wrong type or is out of its range."""


class UnknownParamError(NbbacktestError, TypeError):
    """A strategy was given a parameter it does not declare."""


class StrategyError(NbbacktestError, RuntimeError):
    """User strategy code raised; the original exception is the ``__cause__``."""


class ClusterError(NbbacktestError, RuntimeError):
    """The ipyparallel cluster is not running, has no engines, or failed."""


class SweepError(NbbacktestError, ValueError):
    """A sweep specification (grid, where, metric, engines, ...) is invalid."""


class SweepFailedError(NbbacktestError, RuntimeError):
    """A sweep ended early because its execution failed (every engine lost, ...).

    The cause is the ``__cause__``; ``result`` is the sweep's
    :class:`~nbbacktest.parallel.sweep.SweepResult`, status ``failed``, with every
    row that finished before the failure.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class ReportPathError(NbbacktestError, OSError):
    """A report cannot be written where asked: a missing folder, a folder, no permission."""


class NbbacktestWarning(UserWarning):
    """Something nbbacktest fixed for you (e.g. sorted an unsorted index)."""


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The candidates closest to ``word``: the single best, or those tied for best.

    A did-you-mean hint that lists every name above ``cutoff`` (``difflib``'s
    ``get_close_matches``) offers ``period, upper`` for ``perod``; the one
    closest is what was meant unless two are exactly as close.

    Examples
    --------
    >>> closest("perod", ["upper", "period", "lower"])
    ['period']
    >>> closest("fst", ["fast", "fist"])
    ['fast', 'fist']
    >>> closest("zzz", ["fast", "slow"])
    []
    """
    scores: dict[str, float] = {}
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    for candidate in candidates:
        matcher.set_seq1(candidate)
        # The same three ratios, in the same order, as difflib.get_close_matches.
        if (matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff
                and matcher.ratio() >= cutoff):
            scores[candidate] = matcher.ratio()
    if not scores:
        return []
    best = max(scores.values())
    return [c for c, score in scores.items() if math.isclose(score, best)]


def did_you_mean(word: object, candidates: Iterable[object], cutoff: float = 0.6) -> str:
    """The hint to append to an error about an unknown name: ``" Did you mean: x?"`` or ``""``.

    The one phrasing of every did-you-mean in the package; candidates and word are
    compared as strings.

    Examples
    --------
    >>> "Unknown metric 'sharp'." + did_you_mean("sharp", ["sharpe", "sortino"])
    "Unknown metric 'sharp'. Did you mean: sharpe?"
    >>> did_you_mean("zzz", ["fast", "slow"])
    ''
    """
    close = closest(str(word), [str(c) for c in candidates], cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""

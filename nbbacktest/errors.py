"""Errors and warnings raised by nbbacktest.

Every error derives from :class:`NbbacktestError` and also from the built-in
exception a Python user would expect (``ValueError`` for bad values, ``TypeError``
for unknown parameters), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


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


class NbbacktestWarning(UserWarning):
    """Something nbbacktest fixed for you (e.g. sorted an unsorted index)."""

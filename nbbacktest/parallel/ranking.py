"""Ranking a sweep's runs by more than their own metric: the neighbourhood stability score.

A run whose metric is high while its grid neighbours' are low is a spike (often a
lucky handful of trades); a run on a plateau of good neighbours is likelier to hold
up on other data. :func:`neighbourhood_mean` scores each run by the mean of its
metric and its neighbours' metric, where a neighbour is the run one step up or
down along one param of the grid, every other param and the symbol equal (the
runs that differ from it in one param by one step; not the diagonals).
``SweepResult.stability()`` applies it to a sweep, ``SweepResult.best_stable``
and ``sweep.table(rank_by="stability")`` rank by it.

Examples
--------
>>> points = [(1,), (2,), (3,)]
>>> neighbourhood_mean([1.0, 4.0, float("nan")], points).tolist()
[2.5, 2.5, nan]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

#: The stability column of ``sweep.table(rank_by="stability")`` is the metric's name
#: with this suffix (``sharpe_stability``).
STABILITY_SUFFIX = "_stability"


def grid_axis(values: Sequence[Any]) -> list[Any]:
    """The distinct values of one param, in grid order: sorted, or as first seen if they do not sort.

    Examples
    --------
    >>> grid_axis([20, 5, 10, 5])
    [5, 10, 20]
    >>> grid_axis(["b", None, "a"])
    ['b', None, 'a']
    """
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)
    except TypeError:
        return distinct


def neighbourhood_mean(
    values: Sequence[float] | np.ndarray,
    points: Sequence[tuple[Any, ...]],
    groups: Sequence[Hashable] | None = None,
) -> np.ndarray:
    """Each run's value averaged with its grid neighbours' values, NaN ones skipped.

    Parameters
    ----------
    values : sequence of float
        One value per run (NaN: failed, or not to be counted).
    points : sequence of tuple
        One tuple of param values per run, the same params in the same order. Each
        param's steps are its distinct values, sorted (:func:`grid_axis`).
    groups : sequence, optional
        One key per run (its symbol): runs of different groups are never neighbours.

    Returns
    -------
    numpy.ndarray
        The mean of the run's value and those of its neighbours (one step up or down
        in one param, the rest equal, same group) that are not NaN; NaN where the
        run's own value is NaN.

    Examples
    --------
    A 3x3 grid of (fast, slow): the spike at (5, 60) averages with its two
    neighbours, (5, 40) and (10, 60), to (9 + 0 + 1) / 3; the centre with its four.

    >>> points = [(f, s) for f in (5, 10, 15) for s in (20, 40, 60)]
    >>> values = [0, 0, 9,
    ...           1, 1, 1,
    ...           2, 2, float("nan")]
    >>> neighbourhood_mean(values, points).round(3).tolist()
    [0.333, 2.5, 3.333, 1.0, 1.0, 3.667, 1.667, 1.667, nan]
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if len(points) != n or (groups is not None and len(groups) != n):
        raise ValueError(f"values, points and groups must have one entry per run ({n})")
    keys: list[Hashable] = [None] * n if groups is None else list(groups)
    width = len(points[0]) if n else 0
    steps = np.zeros((n, width), dtype=np.int64)
    for d in range(width):
        column = [point[d] for point in points]
        position = {value: k for k, value in enumerate(grid_axis(column))}
        steps[:, d] = [position[value] for value in column]
    at = {(key, tuple(step)): i for i, (key, step) in enumerate(zip(keys, steps.tolist()))}
    out = np.full(n, math.nan)
    for i, step in enumerate(steps.tolist()):
        if math.isnan(values[i]):
            continue
        total, count = float(values[i]), 1
        for d in range(width):
            for delta in (-1, 1):
                step[d] += delta
                j = at.get((keys[i], tuple(step)))
                step[d] -= delta
                if j is not None and not math.isnan(values[j]):
                    total, count = total + float(values[j]), count + 1
        out[i] = total / count
    return out

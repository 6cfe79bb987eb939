"""PBO's splits in one compiled pass: the in-sample winner and its out-of-sample rank.

Combinatorially symmetric cross-validation ranks N trials on each of the
``C(S, S/2)`` splits of S blocks: 12,870 splits of 10,000 trials are 1.3e8
Sharpe ratios in sample and as many out of sample. As numpy array operations
that is a dozen passes over (splits x trials) temporaries (~7 s); here, one
loop per split that keeps nothing larger than two rows of N:

- each split comes with its complement: the in-sample half of one is the
  out-of-sample half of the other, so the per-block sums of a split give both,
  and every Sharpe ratio is computed once;
- the winner (first maximum, NaN last) and its rank (trials below it, ties
  counted half) are found in the same pass.

The arithmetic is that of ``overfitting._metric_from_sums`` and
``overfitting._rank``, scalar by scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from nbbacktest.engine.compiled import njit, prange

__all__ = ["SplitPlan", "block_sums", "rank_splits", "ranked_splits", "revolving_door", "split_plan"]

#: Chunks of split pairs, run on numba's threads: a few per core, each starting from
#: fresh sums (a full sum of its first split, then one block in and one out per row).
_CHUNKS = 64


@njit(cache=True, nogil=True, error_model="numpy")
def _metrics(sharpe: bool, count: np.ndarray, s1: np.ndarray, s2: np.ndarray, centre: np.ndarray,
             out: np.ndarray) -> None:
    # Sharpe (ddof=1) or mean from centred sums; -inf (ranked last) under 2 (Sharpe) or 1
    # values. Written without branches in the loop so that it compiles to vector code.
    fewest = 2.0 if sharpe else 1.0
    for j in range(len(out)):
        dev_mean = s1[j] / count[j]
        mean = centre[j] + dev_mean
        std = np.sqrt(max(s2[j] - s1[j] * dev_mean, 0.0) / (count[j] - 1.0))
        # A run without spread (flat): 0 when flat at 0, else +-inf.
        flat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        value = (mean / std if std > 0.0 else flat) if sharpe else mean
        out[j] = value if count[j] >= fewest else -math.inf


@njit(cache=True, nogil=True)
def _argmax(values: np.ndarray) -> int:
    best = 0
    for j in range(1, len(values)):
        if values[j] > values[best]:
            best = j
    return best


@njit(cache=True, nogil=True)
def _relative_rank(values: np.ndarray, of: float) -> float:
    below = 0
    tied = 0
    for value in values:
        below += value < of
        tied += value == of
    return (below + (tied + 1) / 2.0) / (len(values) + 1)


@njit(cache=True, nogil=True)
def _record(split: int, inside: np.ndarray, outside: np.ndarray, selected: np.ndarray,
            winner_is: np.ndarray, winner_oos: np.ndarray, rank: np.ndarray) -> None:
    best = _argmax(inside)
    selected[split] = best
    winner_is[split] = inside[best]
    winner_oos[split] = outside[best]
    rank[split] = _relative_rank(outside, outside[best])


@njit(cache=True, nogil=True)
def block_sums(values: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per block and trial: the count, centred sum and sum of squares of non-NaN returns.

    ``values`` is (rows, N) with ``rows`` a multiple of ``blocks``; each trial is
    centred on its mean over all rows (so that the sums of squares keep their
    precision), which comes back as the fourth array. Two passes over the rows,
    nothing of the matrix's size allocated.
    """
    rows, n = values.shape
    size = rows // blocks
    total = np.zeros(n)
    seen = np.zeros(n)
    for r in range(rows):
        for j in range(n):
            value = values[r, j]
            if value == value:
                total[j] += value
                seen[j] += 1.0
    centre = total / seen
    count = np.zeros((blocks, n))
    s1 = np.zeros((blocks, n))
    s2 = np.zeros((blocks, n))
    for r in range(rows):
        b = r // size
        for j in range(n):
            value = values[r, j]
            if value == value:
                dev = value - centre[j]
                count[b, j] += 1.0
                s1[b, j] += dev
                s2[b, j] += dev * dev
    return count, s1, s2, centre


@njit(cache=True, nogil=True, parallel=True)
def rank_splits(sharpe: bool, count: np.ndarray, s1: np.ndarray, s2: np.ndarray, centre: np.ndarray,
                members: np.ndarray, split: np.ndarray, partner: np.ndarray, selected: np.ndarray,
                winner_is: np.ndarray, winner_oos: np.ndarray, rank: np.ndarray) -> None:
    """Fill, per split, the in-sample winner, its metric in and out of sample, and its rank w.

    ``count``, ``s1`` and ``s2`` are :func:`block_sums`' (S, N) arrays, and
    ``centre`` its per-trial centre. Row t of ``members`` (0 or 1 per block) is
    the in-sample half of split ``split[t]``, whose complement is split
    ``partner[t]``: one row per pair of splits, in an order where consecutive rows
    differ in few blocks (a revolving door: one in, one out), so that each row's
    sums are the previous row's plus a block and minus another. Rows run in
    chunks, one thread each; a chunk starts from zero sums, which also bounds the
    rounding that the running sums accumulate.
    """
    blocks, n = count.shape
    sums = (count, s1, s2)
    total = np.zeros((3, n))
    for b in range(blocks):
        for row in range(3):
            total[row] += sums[row][b]
    rows = len(members)
    chunks = min(rows, _CHUNKS)
    for chunk in prange(chunks):
        inside = np.zeros((3, n))
        outside = np.empty((3, n))
        first = np.empty(n)   # a split's in-sample metric: its partner's out of sample
        second = np.empty(n)  # the partner's in-sample metric
        held = np.zeros(blocks, dtype=members.dtype)
        for t in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            for k in range(blocks):
                step = members[t, k] - held[k]
                if step != 0:
                    held[k] = members[t, k]
                    for row in range(3):
                        block = sums[row][k]
                        for j in range(n):
                            inside[row, j] += step * block[j]
            for row in range(3):
                for j in range(n):
                    outside[row, j] = total[row, j] - inside[row, j]
            _metrics(sharpe, inside[0], inside[1], inside[2], centre, first)
            _metrics(sharpe, outside[0], outside[1], outside[2], centre, second)
            _record(split[t], first, second, selected, winner_is, winner_oos, rank)
            _record(partner[t], second, first, selected, winner_is, winner_oos, rank)


def revolving_door(n: int, k: int) -> list[tuple[int, ...]]:
    """Every k-subset of ``range(n)``, each differing from the one before by one element in, one out.

    The revolving-door order (Knuth, TAOCP 7.2.1.3): the subsets without
    ``n - 1``, then those with it, the latter from the (n-1, k-1) order reversed.

    Examples
    --------
    >>> revolving_door(4, 2)
    [(0, 1), (1, 2), (0, 2), (2, 3), (1, 3), (0, 3)]
    """
    if k == 0:
        return [()]
    if k == n:
        return [tuple(range(n))]
    return revolving_door(n - 1, k) + [subset + (n - 1,) for subset in reversed(revolving_door(n - 1, k - 1))]


@dataclass(frozen=True)
class SplitPlan:
    """The splits of S blocks, and the walk the compiled pass takes over their pairs."""

    splits: np.ndarray   # (C, S/2) in-sample blocks, lexicographic: the order of PBO's outputs
    members: np.ndarray  # (C/2, S) 0/1 in-sample blocks of the splits with block 0, revolving door
    split_of: np.ndarray  # (C/2,) each members row's split index ...
    partner: np.ndarray   # ... and its complement's


@lru_cache(maxsize=4)
def split_plan(blocks: int) -> SplitPlan:
    """The splits of ``blocks`` blocks and the walk over their pairs, built once per count."""
    splits = np.array(list(combinations(range(blocks), blocks // 2)))
    # A split as a bit mask of its blocks, to find a split's index (and its complement's).
    masks = (np.int64(1) << splits).sum(axis=1)
    by_mask = np.argsort(masks)

    def index_of(wanted: np.ndarray) -> np.ndarray:
        return by_mask[np.searchsorted(masks, wanted, sorter=by_mask)]

    # Each pair of complementary splits has one split with block 0: walk those.
    with_first = np.array([(0, *(k + 1 for k in rest))
                           for rest in revolving_door(blocks - 1, blocks // 2 - 1)]).reshape(-1, blocks // 2)
    members = np.zeros((len(with_first), blocks), dtype=np.int8)
    members[np.arange(len(with_first))[:, None], with_first] = 1
    walked = (np.int64(1) << with_first).sum(axis=1)
    split_of, partner = index_of(walked), index_of(((np.int64(1) << blocks) - 1) ^ walked)
    for array in (splits, members, split_of, partner):
        array.setflags(write=False)
    return SplitPlan(splits, members, split_of, partner)


def ranked_splits(values: np.ndarray, plan: SplitPlan, metric: str) -> tuple[np.ndarray, ...]:
    """_rank's four arrays for every split, by one compiled pass per pair of complementary splits."""
    count = len(plan.splits)
    out = np.empty(count, dtype=np.int64), np.empty(count), np.empty(count), np.empty(count)
    rank_splits(metric == "sharpe", *block_sums(np.ascontiguousarray(values), plan.members.shape[1]),
                plan.members, plan.split_of, plan.partner, *out)
    return out

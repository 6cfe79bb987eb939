"""nbbacktest.engine.overfitting_kernel: PBO's compiled pass, its walk over the splits."""

from __future__ import annotations

from math import comb

import numpy as np

from nbbacktest.engine.overfitting_kernel import block_sums, revolving_door, split_plan


def test_revolving_door_visits_every_subset_once_one_swap_apart():
    for n, k in ((15, 7), (9, 4), (5, 1), (4, 4), (3, 0)):
        order = revolving_door(n, k)
        assert len(order) == len(set(order)) == comb(n, k)
        assert all(len(set(a) ^ set(b)) == 2 for a, b in zip(order, order[1:]))


def test_the_split_plan_walks_each_pair_of_complements_once():
    for blocks in (2, 4, 8, 16):
        plan = split_plan(blocks)
        splits = [set(split) for split in plan.splits.tolist()]
        assert len(splits) == comb(blocks, blocks // 2)
        for row, split, partner in zip(plan.members, plan.split_of, plan.partner):
            assert splits[split] == set(np.flatnonzero(row).tolist())
            assert splits[partner] == set(range(blocks)) - splits[split]
        assert sorted([*plan.split_of.tolist(), *plan.partner.tolist()]) == list(range(len(splits)))


def test_block_sums_skip_nan_and_centre_each_trial_on_its_mean():
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0], [7.0, 6.0]])
    count, s1, s2, centre = block_sums(values, 2)
    assert centre.tolist() == [4.0, 4.0]
    assert count.tolist() == [[2.0, 1.0], [2.0, 2.0]]
    assert s1.tolist() == [[-4.0, -2.0], [4.0, 2.0]]
    assert s2.tolist() == [[10.0, 4.0], [10.0, 4.0]]

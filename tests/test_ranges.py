"""The grid-range grammar: start:stop:step with the stop excluded, one cap, exact decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

import nbbacktest as nbb
from nbbacktest.errors import SweepError
from nbbacktest.parallel.grid import MAX_RUNS
from nbbacktest.parallel.ranges import MAX_RANGE_VALUES, GridRange, range_of, range_values


@pytest.mark.parametrize(("text", "values"), [
    ("5:60:5", list(range(5, 60, 5))),
    ("5:56:5", list(range(5, 56, 5))),
    ("1:4", [1, 2, 3]),
    ("30:0:-10", [30, 20, 10]),
    ("0.1:0.3:0.05", [0.1, 0.15, 0.2, 0.25]),
    ("0:0.35:0.1", [0, 0.1, 0.2, 0.3]),
])
def test_the_stop_is_excluded_like_range(text, values):
    assert GridRange.parse(text).values() == values


def test_the_param_gives_the_type_and_the_missing_step():
    assert GridRange.parse("0:3", nbb.Param(0.0, step=1.5)).values() == [0.0, 1.5]
    assert GridRange.parse("5:30", nbb.Param(10, step=10)).values() == [5, 15, 25]
    assert GridRange.parse("0:2:1", nbb.Param(0.0)).values() == [0.0, 1.0]
    assert [type(v) for v in GridRange.parse("0:2:1", nbb.Param(0.0)).values()] == [float, float]
    assert GridRange.parse("20:23", nbb.Param(20)).values() == [20, 21, 22]


@pytest.mark.parametrize(("text", "param", "message"), [
    ("5:x:5", None, "5:x:5: stop 'x' is not a number"),
    ("a:60:5", None, "a:60:5: start 'a' is not a number"),
    ("5::5", None, "5::5: stop is missing"),
    ("5:inf:5", None, "5:inf:5: stop 'inf' is not a finite number"),
    ("5:60:0", None, "5:60:0: step must not be 0"),
    ("5:60:5:1", None, "5:60:5:1: a range is start:stop:step, got 4 parts"),
    ("60:5:5", None, "60:5:5 is empty: no value from start 60 up to stop 5 (stop is excluded, like range)"),
    ("5:60:-5", None, "5:60:-5 is empty: no value from start 5 down to stop 60"),
    ("0:1", nbb.Param(0.0), "0:1: give a step, start:stop:step"),
    ("0:1", nbb.Param(True), "a range needs a numeric parameter"),
    ("5:10:1.5", nbb.Param(5), "5:10:1.5: the step of an int param must be a whole number, got 1.5"),
    ("0:1:1e-9", None, f"0:1:1e-9 has 1,000,000,000 values; at most {MAX_RUNS:,} per parameter: "
                       "raise the step or narrow the range"),
])
def test_parse_errors_name_the_part(text, param, message):
    with pytest.raises(SweepError) as raised:
        GridRange.parse(text, param)
    assert message in str(raised.value)


def test_errors_carry_the_label_of_the_caller():
    with pytest.raises(SweepError, match="^--grid fast=5:x:5: stop 'x' is not a number$"):
        GridRange.parse("5:x:5", label="--grid fast=5:x:5")


def test_one_cap_the_most_runs_of_a_sweep():
    assert MAX_RANGE_VALUES == MAX_RUNS
    assert len(GridRange.parse(f"0:{MAX_RUNS}")) == MAX_RUNS  # the longest range that may run alone
    with pytest.raises(SweepError, match="has 1,000,001 values"):
        GridRange.parse(f"0:{MAX_RUNS + 1}")
    with pytest.raises(SweepError, match="stop: a step of 0.00000001 from 0 to 0.1 has 10,000,001 values"):
        range_values(0.0, 0.1, 1e-8, float, name="stop")


def test_through_a_sliders_first_and_last_value():
    assert str(GridRange.through(5, 30, 5, int)) == "5:35:5"
    assert GridRange.through(5, 30, 5, int).values() == [5, 10, 15, 20, 25, 30]
    assert GridRange.through(5, 32, 5, int).values() == [5, 10, 15, 20, 25, 30]
    # Binary noise of a float slider does not add or drop a value.
    assert GridRange.through(0.1, 0.30000000000000004, 0.1).values() == [0.1, 0.2, 0.3]
    assert GridRange.through(0.0, 0.1, 0.01).stop == Decimal("0.11")


def test_the_text_of_a_range_parses_back_to_its_values():
    for made in (GridRange.through(5, 30, 5, int), GridRange.through(0.0, 0.05, 0.01),
                 GridRange.parse("0.1:0.3:0.05", nbb.Param(0.0)), GridRange.parse("30:0:-10")):
        again = GridRange.parse(str(made), nbb.Param(1.0 if made.kind is float else 1))
        assert again.values() == made.values()


def test_range_values_and_range_of_are_inverse():
    for values, kind in (([5, 10, 15, 20], int), ([0.0, 0.05, 0.1], float), ([2, 18, 34, 50], int)):
        low, high, step = range_of(values, kind)
        assert range_values(low, high, step, kind) == values
    assert range_of([7]) == (7, 7, None)

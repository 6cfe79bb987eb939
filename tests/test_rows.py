"""nbbacktest.parallel.rows: the stat schema, a chunk's columns, the store, Best and the saved line."""

from __future__ import annotations

import datetime as dt
import json
import math
import struct

import numpy as np
import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine import metrics
from nbbacktest.parallel.grid import plan_instances, plan_sweep
from nbbacktest.parallel.rows import (
    CANCELLED,
    DONE,
    FAILED,
    NAT,
    PENDING,
    Best,
    Rows,
    RowsBuilder,
    RowStore,
    StatSchema,
    describe_row,
    parse_saved_line,
    row_params,
    saved_line,
)

pytestmark = pytest.mark.timeout(120)

SCHEMA = StatSchema.current()
ERROR = ("ValueError", "bad", "Traceback (most recent call last):\nValueError: bad\n")


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


@pytest.fixture(scope="module")
def runs(daily):
    """The simulator's stats of three SmaCross points: {(fast, slow): stats dict}."""
    return {(fast, slow): nbb.backtest(SmaCross(fast, slow), daily).stats.to_dict()
            for fast, slow in [(5, 30), (10, 30), (20, 60)]}


def make_store(points=((5, 30), (10, 30), (20, 60)), metric="sharpe", maximize=True, symbols=None):
    plan = plan_instances([SmaCross(f, s) for f, s in points], symbols=symbols)
    return RowStore(plan, SCHEMA, metric, maximize)


def chunk(*entries, schema=SCHEMA):
    """Rows of ``(row, stats or ERROR, symbol)`` entries, 0.25 s each."""
    builder = RowsBuilder(schema)
    for row, stats, symbol in entries:
        if isinstance(stats, tuple):
            builder.failed(row, stats, 0.25)
        else:
            builder.ok(row, stats, symbol, 0.25)
    return builder.build()


# ------------------------------------------------------------------ StatSchema
def test_the_schema_follows_the_kinds_metrics_declares():
    assert SCHEMA.names == metrics.STAT_NAMES
    assert SCHEMA.ints == ("trades",)
    assert SCHEMA.durations == (
        "max_drawdown_duration", "avg_drawdown_duration", "max_trade_duration", "avg_trade_duration",
    )
    assert SCHEMA.per_data == ("start", "end", "duration")
    assert SCHEMA.objects == ()
    assert set(SCHEMA.floats) == {n for n in metrics.STAT_NAMES if n not in metrics.STAT_KINDS}
    assert SCHEMA.numeric == metrics.NUMERIC_STATS
    assert SCHEMA.metric_column("trades") == ("ints", 0)
    assert SCHEMA.metric_column("sharpe") == ("floats", SCHEMA.floats.index("sharpe"))


def test_a_kind_added_to_metrics_is_read_when_the_schema_is_made(monkeypatch):
    labels = {**metrics.STAT_LABELS, "regime": "Regime", "bars": "Bars"}
    monkeypatch.setattr(metrics, "STAT_LABELS", labels)
    monkeypatch.setitem(metrics.STAT_KINDS, "regime", "object")
    monkeypatch.setitem(metrics.STAT_KINDS, "bars", "int")
    schema = StatSchema.current()
    assert schema.names[-2:] == ("regime", "bars")
    assert schema.objects == ("regime",) and schema.ints == ("trades", "bars")
    assert "regime" not in schema.numeric and "bars" in schema.numeric


def test_an_unknown_kind_raises_naming_it(monkeypatch):
    monkeypatch.setitem(metrics.STAT_KINDS, "trades", "count")
    with pytest.raises(ValueError, match=r"unknown kinds \['count'\]"):
        StatSchema.current()


# ------------------------------------------------------------------ RowsBuilder and Rows
def test_rows_keep_a_column_per_kind_of_stat(runs):
    stats = runs[(5, 30)]
    rows = chunk((4, stats, None), (2, ERROR, None), (7, runs[(20, 60)], None))
    assert rows.rows.dtype == np.int64 and rows.rows.tolist() == [4, 2, 7]
    assert rows.floats.dtype == np.float64 and rows.floats.shape == (3, len(SCHEMA.floats))
    assert rows.ints.dtype == np.int64 and rows.ints.shape == (3, 1 + len(SCHEMA.durations))
    assert rows.seconds.dtype == np.float64 and rows.seconds.tolist() == [0.25] * 3
    assert rows.objects is None  # no object stat in the schema
    assert rows.floats[0].tolist() == [stats[n] for n in SCHEMA.floats]
    assert rows.ints[0].tolist() == [stats["trades"], *(stats[n].value for n in SCHEMA.durations)]
    # A failed run: NaN floats, zero counts, NaT durations, and its error.
    assert np.isnan(rows.floats[1]).all()
    assert rows.ints[1].tolist() == [0] + [NAT] * len(SCHEMA.durations)
    assert rows.errors == {2: ERROR}
    # Per-data values are kept once per symbol: the first run's.
    assert rows.per_data == {None: (stats["start"], stats["end"], stats["duration"])}


def test_a_duration_without_value_is_nat(runs):
    stats = {**runs[(5, 30)], "max_drawdown_duration": None}
    assert chunk((0, stats, None)).ints[0, 1] == NAT
    stats = {**runs[(5, 30)], "max_drawdown_duration": pd.NaT}
    assert chunk((0, stats, None)).ints[0, 1] == NAT


def test_object_stats_travel_as_tuples(monkeypatch, runs):
    monkeypatch.setattr(metrics, "STAT_LABELS", {**metrics.STAT_LABELS, "regime": "Regime"})
    monkeypatch.setitem(metrics.STAT_KINDS, "regime", "object")
    schema = StatSchema.current()
    rows = chunk((0, {**runs[(5, 30)], "regime": "up"}, None), (1, ERROR, None), schema=schema)
    assert rows.objects == [("up",), (None,)]
    assert rows.without([0]).objects == [(None,)]


def test_empty_rows_have_the_schema_widths():
    rows = Rows.empty()
    assert rows.rows.shape == (0,) and rows.floats.shape == (0, len(SCHEMA.floats))
    assert rows.ints.shape == (0, 1 + len(SCHEMA.durations)) and rows.errors == {} and rows.per_data == {}


def test_without_drops_rows_and_their_errors(runs):
    rows = chunk((0, runs[(5, 30)], None), (1, ERROR, None), (2, runs[(10, 30)], None),
                 (3, ("KeyError", "'k'", ""), None))
    left = rows.without([1, 2, 99])
    assert left.rows.tolist() == [0, 3]
    assert left.errors == {3: ("KeyError", "'k'", "")}
    assert left.floats.shape == (2, len(SCHEMA.floats)) and left.ints.shape == (2, 1 + len(SCHEMA.durations))
    assert left.floats[0].tolist() == rows.floats[0].tolist() and np.isnan(left.floats[1]).all()
    assert left.seconds.tolist() == [0.25, 0.25]
    assert rows.without([]).rows.tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ row_params, describe_row
def test_row_params_of_a_sweep_of_run_many_and_of_a_universe():
    plan = plan_sweep(SmaCross, {"fast": [5, 10]}, symbols=["AAA", "BBB"])
    assert row_params(plan, 3) == {"fast": 10, "slow": 30, "symbol": "BBB"}
    assert describe_row(plan, 3) == "fast=10, slow=30, symbol='BBB'"

    class Other(nbb.Strategy):
        lookback = 20

    mixed = plan_instances([SmaCross(5, 50), Other(7)])
    assert row_params(mixed, 1) == {"strategy": "Other", "params": "{'lookback': 7}"}


# ------------------------------------------------------------------ RowStore
def test_stats_of_a_row_equal_the_simulators_stats(runs):
    store = make_store()
    store.store(chunk((0, runs[(5, 30)], None), (2, runs[(20, 60)], None)), engine=1, host="h")
    for row, point in ((0, (5, 30)), (2, (20, 60))):
        stats = store.stats(row)
        expected = runs[point]
        assert stats == expected and list(stats) == list(metrics.STAT_NAMES)
        assert {name: type(value) for name, value in stats.items()} == \
            {name: type(value) for name, value in expected.items()}
        assert all(bits(stats[n]) == bits(expected[n]) for n in SCHEMA.floats)
    assert store.stats(1) is None  # pending


def test_a_run_that_comes_back_twice_keeps_the_first(runs):
    store = make_store()
    first = chunk((0, runs[(5, 30)], None), (1, ERROR, None))
    assert store.store(first, engine=0, host="a").tolist() == [0, 1]
    # The same runs again (a requeued chunk), with other values: nothing is taken.
    again = chunk((1, runs[(10, 30)], None), (0, runs[(20, 60)], None), (2, runs[(20, 60)], None))
    assert store.store(again, engine=1, host="b").tolist() == [2]
    assert store.stats(0) == runs[(5, 30)]
    assert store.row(0)["engine"] == 0 and store.row(0)["host"] == "a"
    assert store.status[1] == FAILED and store.errors[1] == ERROR and store.stats(1) is None
    assert store.row(2)["engine"] == 1


def test_counts_pending_rows_and_cancel(runs):
    store = make_store(points=((5, 30), (10, 30), (20, 60), (5, 60)))
    assert store.counts() == (0, 0) and store.pending_rows() == [0, 1, 2, 3]
    store.store(chunk((2, runs[(20, 60)], None), (1, ERROR, None)), engine=0, host=None)
    assert store.counts() == (2, 1)
    assert (store.count(DONE), store.count(FAILED), store.count(PENDING)) == (1, 1, 2)
    assert store.pending_rows() == [0, 3]
    assert store.first_error == 1
    assert store.mark_unfinished_cancelled() == 2
    assert store.count(CANCELLED) == 2 and store.pending_rows() == []
    assert store.table()["status"].tolist() == ["cancelled", "failed", "done", "cancelled"]


def test_the_first_failure_is_the_first_in_grid_order(runs):
    store = make_store()
    store.store(chunk((2, ERROR, None)), engine=0, host=None)
    store.store(chunk((0, ("KeyError", "k", ""), None)), engine=0, host=None)
    assert store.first_error == 0


def test_the_best_ignores_failed_runs_even_for_a_count(runs):
    store = make_store(metric="trades", maximize=False)
    store.store(chunk((0, ERROR, None), (1, runs[(10, 30)], None), (2, runs[(20, 60)], None)),
                engine=0, host=None)
    fewer = 1 if runs[(10, 30)]["trades"] <= runs[(20, 60)]["trades"] else 2
    assert store.best.index == fewer  # not the failed run's 0
    assert store.best.value == min(runs[(10, 30)]["trades"], runs[(20, 60)]["trades"])
    values = store.metric_values(chunk((0, ERROR, None), (1, runs[(10, 30)], None)), np.array([0, 1]))
    assert math.isnan(values[0]) and values[1] == runs[(10, 30)]["trades"]


def test_restore_takes_saved_rows_as_finished(runs):
    store = make_store()
    store.store(chunk((0, runs[(5, 30)], None), (1, ERROR, None)), engine=1, host="h")
    saved = [store.saved(0), store.saved(1), (7, runs[(5, 30)], None, 0.1, 0, "h")]  # 7: beyond the plan
    again = make_store()
    assert again.restore(saved) == 2
    assert again.pending_rows() == [2]
    assert again.stats(0) == runs[(5, 30)] and again.errors[1] == ERROR
    pd.testing.assert_frame_equal(again.table(), store.table())


def test_restore_of_stats_older_than_the_schema_fills_the_new_ones(runs):
    store = make_store()
    old = {k: v for k, v in runs[(5, 30)].items() if k not in ("profit_factor", "trades")}
    assert store.restore([(0, old, None, 0.5, 0, None)]) == 1
    stats = store.stats(0)
    assert math.isnan(stats["profit_factor"]) and stats["trades"] == 0
    assert stats["sharpe"] == runs[(5, 30)]["sharpe"]


def test_restore_of_a_saved_failure_without_error_is_still_failed():
    store = make_store()
    store.restore([(1, None, None, 0.5, 0, None)])
    assert store.status[1] == FAILED and store.errors[1][0] == "Error"


def test_table_columns_and_dtypes_when_every_run_is_done(runs):
    store = make_store()
    store.store(chunk(*((i, runs[p], None) for i, p in enumerate(runs))), engine=0, host="h")
    table = store.table()
    assert list(table.columns) == ["fast", "slow", *metrics.STAT_NAMES, "error", "traceback", "engine",
                                   "host", "seconds", "status"]
    assert table["trades"].dtype == np.int64
    assert table["trades"].tolist() == [s["trades"] for s in runs.values()]
    assert table["max_drawdown_duration"].dtype == "m8[ns]"
    assert table["sharpe"].dtype == np.float64
    assert table["engine"].dtype == "Int64" and table["engine"].tolist() == [0, 0, 0]
    assert table["start"].tolist() == [s["start"] for s in runs.values()]
    assert table["status"].tolist() == ["done"] * 3
    assert table["error"].isna().all()
    assert store.table() is table  # built once until something is stored


def test_table_dtypes_while_runs_are_pending_or_failed(runs):
    store = make_store()
    store.store(chunk((0, runs[(5, 30)], None), (1, ERROR, None)), engine=3, host="h")
    table = store.table()
    assert table["trades"].dtype == np.float64  # NaN marks the runs without a count
    assert table["trades"][0] == runs[(5, 30)]["trades"] and table["trades"][1:].isna().all()
    assert table["max_drawdown_duration"].dtype == "m8[ns]"
    assert table["max_drawdown_duration"][0] == runs[(5, 30)]["max_drawdown_duration"]
    assert table["max_drawdown_duration"][1:].isna().all()
    assert table["start"][0] == runs[(5, 30)]["start"] and table["start"][1:].isna().all()
    assert table["engine"].tolist()[:2] == [3, 3] and table["engine"].isna().tolist() == [False, False, True]
    assert table["error"][1] == "ValueError: bad" and table["error"].isna().tolist() == [True, False, True]
    assert table["traceback"][1] == ERROR[2]
    assert math.isnan(table["seconds"][2]) and table["seconds"][0] == 0.25
    assert table["status"].tolist() == ["done", "failed", "pending"]


def test_per_data_values_are_each_symbols_own(runs):
    store = make_store(points=((5, 30), (10, 30)), symbols=["AAA", "BBB"])
    late = {**runs[(5, 30)], "start": pd.Timestamp("2015-06-01"), "duration": pd.Timedelta("100D")}
    store.store(chunk((0, runs[(5, 30)], "AAA"), (1, late, "BBB"), (3, late, "BBB")), engine=0, host=None)
    table = store.table()
    assert table["symbol"].tolist() == ["AAA", "BBB", "AAA", "BBB"]
    assert table["start"].tolist()[:2] == [runs[(5, 30)]["start"], pd.Timestamp("2015-06-01")]
    assert pd.isna(table["start"][2]) and table["start"][3] == pd.Timestamp("2015-06-01")
    assert store.stats(3)["duration"] == pd.Timedelta("100D")
    assert store.row(1)["symbol"] == "BBB"


def test_row_is_one_dict_of_params_stats_and_run(runs):
    store = make_store()
    store.store(chunk((2, runs[(20, 60)], None), (0, ERROR, None)), engine=-1, host="here")
    row = store.row(2)
    assert row["fast"] == 20 and row["slow"] == 60 and row["sharpe"] == runs[(20, 60)]["sharpe"]
    assert row["engine"] is None  # -1: in process
    assert (row["error"], row["status"], row["host"]) == (None, "done", "here")
    failed = store.row(0)
    assert failed["error"] == "ValueError: bad" and failed["traceback"] == ERROR[2]
    assert "sharpe" not in failed and failed["status"] == "failed"


# ------------------------------------------------------------------ Best
def test_best_of_ties_is_the_first_offered():
    best = Best(maximize=True)
    assert best.offer(1.0, 5) and not best.offer(1.0, 2) and best.index == 5
    assert best.offer(2.0, 7) and (best.value, best.index) == (2.0, 7)


def test_nan_never_wins():
    best = Best(maximize=False)
    assert not best.offer(math.nan, 0) and best.index is None and math.isnan(best.value)
    assert best.offer(3.0, 1)
    assert not best.offer(math.nan, 2) and best.index == 1
    best.offer_many(np.array([math.nan, math.nan]), np.array([3, 4]))
    best.offer_many(np.array([]), np.array([], dtype=np.int64))
    assert (best.value, best.index) == (3.0, 1)


def test_minimize_takes_the_lowest():
    best = Best(maximize=False)
    for index, value in enumerate([3.0, -1.0, 2.0, -1.0, -5.0]):
        best.offer(value, index)
    assert (best.value, best.index) == (-5.0, 4)
    best = Best(maximize=True)
    for index, value in enumerate([3.0, -1.0, 2.0]):
        best.offer(value, index)
    assert (best.value, best.index) == (3.0, 0)


def test_offer_many_is_offer_one_at_a_time():
    best = Best(maximize=True)
    best.offer_many(np.array([1.0, math.nan, 4.0, 4.0]), np.array([10, 11, 12, 13]))
    assert (best.value, best.index) == (4.0, 12)
    best.offer_many(np.array([4.0, 2.0]), np.array([1, 2]))  # a tie later: the first stays
    assert best.index == 12
    low = Best(maximize=False)
    low.offer_many(np.array([math.nan, 2.0, 1.0, 1.0]), np.array([0, 1, 2, 3]))
    assert (low.value, low.index) == (1.0, 2)


# ------------------------------------------------------------------ the saved line
FLOATS = [0.1 + 0.2, math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3]


def test_a_saved_line_round_trips_floats_to_the_bit():
    stats = {f"x{k}": value for k, value in enumerate(FLOATS)}
    stats["numpy"] = np.float64(2) / 3
    line = saved_line((3, stats, None, 0.1 + 0.7, 2, "host-a"))
    assert "\n" not in line
    row, back, error, seconds, engine, host = parse_saved_line(line.encode())
    assert (row, error, engine, host) == (3, None, 2, "host-a")
    assert bits(seconds) == bits(0.1 + 0.7)
    assert list(back) == list(stats)
    for name, value in stats.items():
        assert type(back[name]) is float and bits(back[name]) == bits(value), name


@pytest.mark.parametrize("stamp", [
    pd.Timestamp("2024-03-10 01:30", tz="America/New_York").as_unit("s"),
    pd.Timestamp("2024-01-01 12:00:00.123456789"),
    pd.Timestamp("2024-01-01 09:30", tz=dt.timezone(dt.timedelta(hours=2))).as_unit("ms"),
    pd.Timestamp("2024-06-30 16:00", tz="UTC").as_unit("us"),
    pd.Timestamp("1999-12-31 23:59:59.5", tz="Asia/Kolkata"),
], ids=["zone, s", "naive, ns", "offset, ms", "utc, us", "kolkata, ns"])
def test_a_saved_line_keeps_a_timestamps_zone_and_unit(stamp):
    back = parse_saved_line(saved_line((0, {"start": stamp}, None, 0.0, 0, None)).encode())[1]["start"]
    assert back == stamp and back.unit == stamp.unit and str(back.tz) == str(stamp.tz)
    assert back.value == stamp.value
    assert pd.DatetimeIndex([back]).dtype == pd.DatetimeIndex([stamp]).dtype


@pytest.mark.parametrize("delta", [pd.Timedelta("962D"), pd.Timedelta("1D 1s").as_unit("s"),
                                   pd.Timedelta(1, unit="ns"), pd.Timedelta("-3h").as_unit("ms")])
def test_a_saved_line_keeps_a_timedelta_and_its_unit(delta):
    back = parse_saved_line(saved_line((0, {"d": delta}, None, 0.0, 0, None)).encode())[1]["d"]
    assert back == delta and back.unit == delta.unit and back.value == delta.value


def test_a_saved_line_of_a_real_run_restores_the_same_row(runs):
    store = make_store()
    store.store(chunk((0, runs[(5, 30)], None), (1, ERROR, None)), engine=1, host="h")
    lines = [saved_line(store.saved(r)) for r in (0, 1)]
    assert json.loads(lines[1])["error"] == list(ERROR)
    parsed = [parse_saved_line(line.encode()) for line in lines]
    assert parsed[1][1:3] == (None, ERROR)
    again = make_store()
    again.restore(parsed)
    assert again.stats(0) == runs[(5, 30)]
    pd.testing.assert_frame_equal(again.table(), store.table())


def test_nat_is_saved_as_no_value_and_restored_as_nat(runs):
    stats = {**runs[(5, 30)], "max_drawdown_duration": pd.NaT}
    parsed = parse_saved_line(saved_line((0, stats, None, 0.0, 0, None)).encode())
    assert parsed[1]["max_drawdown_duration"] is None
    store = make_store()
    store.restore([parsed])
    assert store.stats(0)["max_drawdown_duration"] is pd.NaT
    assert pd.isna(store.table()["max_drawdown_duration"][0])


@pytest.mark.parametrize("line, error", [
    (b"not json", ValueError),
    (b"", ValueError),
    (b'{"row": 1, "stats": {"sharpe": 1.0}, "error": null, "seconds": 0.1, "engine": 0, "ho', ValueError),
    (b'{"row": 1}', KeyError),
    (b'{"row": 1, "stats": {}, "error": null}', KeyError),
    (b"[1, 2, 3]", TypeError),
    (b"3", TypeError),
    (b'{"row": -1, "stats": {}, "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": "1", "stats": {}, "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": true, "stats": {}, "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1.0, "stats": {}, "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": null, "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": {}, "error": ["E", "m", "t"], "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": null, "error": ["E", "m"], "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": [1], "error": null, "seconds": 0, "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": {}, "error": null, "seconds": "x", "engine": 0, "host": null}', ValueError),
    (b'{"row": 1, "stats": {}, "error": null, "seconds": 0, "engine": null, "host": null}', TypeError),
    (b'{"row": 1, "stats": {"s": {"$ts": 5, "tz": null}}, "error": null, "seconds": 0, "engine": 0,'
     b' "host": null}', KeyError),
    (b'{"row": 1, "stats": {"s": {"$td": 5}}, "error": null, "seconds": 0, "engine": 0, "host": null}',
     KeyError),
])
def test_a_damaged_line_raises_one_of_the_documented_errors(line, error):
    with pytest.raises(error):
        parse_saved_line(line)

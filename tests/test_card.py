"""The run card (parallel/card.py): its contents, card_differences, card.json, resumes."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.parallel.card import (
    CARD,
    PACKAGES,
    card_differences,
    compact_values,
    data_card,
    new_card,
    read_card,
)
from nbbacktest.parallel.checkpoint import ROWS
from nbbacktest.parallel.grid import plan_instances, plan_sweep
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.trust import DATA_DIR_ENV

pytestmark = pytest.mark.timeout(120)
GRID = {"fast": [5, 10, 20], "slow": [30, 60]}


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's signing key, never the real user's."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "user"))


def card_of(data, strategy=SmaCross, grid=GRID, *, where=None, seed=0, n=None, min_trades=0, **settings):
    plan = plan_sweep(strategy, grid, where=where, seed=seed, n=n,
                      symbols=list(data) if isinstance(data, dict) else None)
    return new_card(SweepSpec(plan, Settings(**settings), min_trades=min_trades), data)


# ------------------------------------------------------------------ contents
def test_a_sweep_s_card_records_what_makes_it_reproducible(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": range(5, 30, 5), "slow": [40, 80]},
                      where="fast < slow", seed=7, metric="return_pct", maximize=False,
                      commission=0.002, progress=False)
    card = sweep.card
    json.dumps(card)  # JSON-able as it is
    assert card["strategy"] == ["conftest.SmaCross"]
    assert list(card["source_hash"]) == ["conftest.SmaCross"]
    assert card["source_hash"]["conftest.SmaCross"].startswith("source:")
    assert card["source"]["conftest.SmaCross"].startswith("class SmaCross(nbb.Strategy):")
    assert card["data"]["bars"] == len(daily) and len(card["data"]["hash"]) == 20
    assert card["grid"] == {"fast": {"start": 5, "stop": 30, "step": 5}, "slow": [40, 80]}
    assert (card["where"], card["seed"], card["sample"]) == ("fast < slow", 7, None)
    assert card["settings"]["commission"] == 0.002 and card["settings"]["fill"] == "next_open"
    assert (card["metric"], card["direction"]) == ("return_pct", "minimize")
    assert card["versions"].keys() == {"python", *PACKAGES}
    assert all(card["versions"].values()), card["versions"]
    assert card["trials"] == {"runs": len(sweep), "grid_size": 10, "done": len(sweep), "failed": 0,
                              "cancelled": 0}
    assert card["engines"] == {"count": 0, "hosts": [card["host"]]}
    assert card["status"] == "complete" and card["started"] <= card["ended"]
    assert card["seconds"] >= 0 and card["resumes"] == []


def test_a_lambda_where_and_a_callable_commission_are_kept_as_text(daily):
    card = card_of(daily, where=lambda p: p.fast < p.slow, commission=lambda size, price: 1.0)
    assert card["where"] == "lambda p: p.fast < p.slow"
    assert card["settings"]["commission"] == "lambda size, price: 1.0"
    json.dumps(card)


def test_grid_values_are_kept_compactly():
    assert compact_values(range(10, 200, 10)) == {"start": 10, "stop": 200, "step": 10}
    assert compact_values([3, 2, 1]) == {"start": 3, "stop": 0, "step": -1}
    assert compact_values([1, 2, 4]) == [1, 2, 4]
    assert compact_values([True, False, True]) == [True, False, True]


def test_a_union_of_grids_and_run_many(daily):
    assert card_of(daily, grid=[{"fast": [5]}, {"slow": [40, 60]}])["grid"] == [
        {"fast": [5]}, {"slow": [40, 60]}]
    spec = SweepSpec(plan_instances([SmaCross(5, 30), Fragile(10, 40)]), Settings())
    card = new_card(spec, daily)
    assert card["grid"] is None and card["strategy"] == ["conftest.SmaCross", "conftest.Fragile"]
    assert set(card["source_hash"]) == {"conftest.SmaCross", "conftest.Fragile"}


def test_a_class_without_source_is_recorded_gracefully(daily):
    namespace: dict = {}
    exec("import nbbacktest as nbb\nclass Made(nbb.Strategy):\n    fast = 10\n"
         "    def signals(self, data):\n        return data['Close'] * 0 + 1.0\n", namespace)
    card = card_of(daily, namespace["Made"], {"fast": [5, 10]})
    [(name, source)] = card["source"].items()
    assert source is None and card["source_hash"][name].startswith("members:")


# ------------------------------------------------------------------ the data
def test_the_data_hash_changes_for_the_one_symbol_whose_data_changed(small_universe):
    before = data_card(small_universe)
    changed = dict(small_universe)
    symbol = list(changed)[1]
    frame = changed[symbol].copy()
    frame.iloc[100, frame.columns.get_loc("Close")] *= 1.0001
    changed[symbol] = frame
    after = data_card(changed)
    assert [s for s in before["symbols"] if before["symbols"][s] != after["symbols"][s]] == [symbol]
    assert card_differences({"data": before}, {"data": after}) == [f"other data: symbol {symbol} differs"]
    fewer = {s: f for s, f in small_universe.items() if s != symbol}
    assert card_differences({"data": before}, {"data": data_card(fewer)}) == [
        f"other data: {symbol} only in the first"]


def test_a_single_frame_has_one_hash(daily):
    card = data_card(daily)
    assert card["hash"] == nbb.parallel.fingerprint.fingerprint(daily) and "symbols" not in card
    other = data_card(daily.iloc[:-1])
    assert card_differences({"data": card}, {"data": other}) == ["other data: the frame differs"]


# ------------------------------------------------------------------ the code
VERSION_1 = '''
import nbbacktest as nbb

class Mine(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)

    def signals(self, data):
        return (data["Close"] > data["Close"].rolling(self.fast).mean()).astype(float)
'''


def test_the_source_hash_changes_when_the_class_changes(tmp_path, monkeypatch, daily):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "card_strategies.py").write_text(VERSION_1)
    module = importlib.import_module("card_strategies")
    monkeypatch.setitem(sys.modules, "card_strategies", module)
    first = card_of(daily, module.Mine, {"fast": [5, 10]})
    assert first["source"]["card_strategies.Mine"] == VERSION_1[VERSION_1.index("class"):]
    assert card_differences(first, card_of(daily, module.Mine, {"fast": [5, 10]})) == []

    (tmp_path / "card_strategies.py").write_text(VERSION_1.replace("> data", ">= data"))
    second = card_of(daily, importlib.reload(module).Mine, {"fast": [5, 10]})
    assert second["source_hash"] != first["source_hash"]
    assert ">= data" in second["source"]["card_strategies.Mine"]
    assert card_differences(first, second) == ["other code: Mine's source differs"]


# ------------------------------------------------------------------ card_differences
def test_card_differences_names_each_kind_of_difference(daily):
    base = card_of(daily, commission=0.001)
    assert card_differences(base, card_of(daily, commission=0.001)) == []
    cases = [
        (card_of(daily, commission=0.002), "other settings: commission 0.001 vs 0.002"),
        (card_of(daily, grid={"fast": [5, 10], "slow": [30, 60]}, commission=0.001),
         "other grid: fast [5, 10, 20] vs [5, 10]"),
        (card_of(daily, where="fast < slow", commission=0.001), "other where: None vs 'fast < slow'"),
        (card_of(daily, seed=3, commission=0.001), "other seed: 0 vs 3"),
        (card_of(daily, n=2, commission=0.001), "other sample (n): None vs 2"),
        (card_of(daily, Fragile, commission=0.001), "other strategy: conftest.SmaCross vs conftest.Fragile"),
        (card_of(daily.iloc[:-5], commission=0.001), "other data: the frame differs"),
        (card_of(daily, commission=0.001, min_trades=3), "other min_trades: 0 vs 3"),
    ]
    for other, expected in cases:
        differences = card_differences(base, other)
        # A smaller sample also means other runs; every other case is that one difference.
        assert differences == [expected], (expected, differences)
    newer = {**base, "versions": {**base["versions"], "pandas": "99.0.0"}}
    assert card_differences(base, newer) == [
        f"other package versions: pandas {base['versions']['pandas']} vs 99.0.0"]
    elsewhere = {**base, "host": "other", "started": "2000-01-01T00:00:00+00:00", "engines": {"count": 8},
                 "status": "cancelled", "trials": {"runs": 6, "done": 1}}
    assert card_differences(base, elsewhere) == []


# ------------------------------------------------------------------ card.json
def test_card_json_is_written_at_the_start_and_completed_at_the_end(tmp_path, daily):
    seen = []

    def read_at_first_event(event):
        if not seen:
            seen.append(json.loads((tmp_path / CARD).read_text()))

    sweep = nbb.sweep(Fragile, daily, GRID, save=tmp_path, on_result=read_at_first_event,
                      progress=False)
    [at_start] = seen
    assert at_start["status"] == "running" and at_start["ended"] is None
    assert at_start["started"] == sweep.card["started"]
    at_end = read_card(tmp_path)
    assert at_end == sweep.card
    assert at_end["status"] == "complete" and at_end["ended"] is not None
    assert at_end["trials"] == {"runs": 6, "grid_size": 6, "done": 4, "failed": 2, "cancelled": 0}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_resume_keeps_the_first_start_and_records_the_resume(tmp_path, daily):
    nbb.sweep(SmaCross, daily, GRID, save=tmp_path, progress=False)
    lines = (tmp_path / ROWS).read_bytes().splitlines(keepends=True)
    (tmp_path / ROWS).write_bytes(b"".join(lines[:2]))
    card = read_card(tmp_path)
    card.update(started="2020-01-02T03:04:05+00:00", seconds=100.0, status="cancelled")
    (tmp_path / CARD).write_text(json.dumps(card))

    resumed = nbb.resume(tmp_path, progress=False)
    assert resumed.card["started"] == "2020-01-02T03:04:05+00:00"
    [record] = resumed.card["resumes"]
    assert record["restored"] == 2 and record["at"] > "2020"
    assert resumed.card["status"] == "complete" and resumed.card["seconds"] >= 100.0
    assert resumed.card["trials"]["done"] == 6
    assert read_card(tmp_path) == resumed.card
    # A second resume appends its record.
    again = nbb.sweep(SmaCross, daily, GRID, save=tmp_path, resume=True, progress=False)
    assert len(again.card["resumes"]) == 2 and again.card["resumes"][1]["restored"] == 6


def test_a_checkpoint_older_than_cards_resumes_and_gets_one(tmp_path, daily):
    nbb.sweep(SmaCross, daily, GRID, save=tmp_path, progress=False)
    (tmp_path / CARD).unlink()
    created = json.loads((tmp_path / "spec.json").read_text())["created"]
    resumed = nbb.resume(tmp_path, progress=False)
    assert resumed.status == "complete"
    assert resumed.card["started"] == created and resumed.card["resumes"][0]["restored"] == 6
    assert read_card(tmp_path) == resumed.card


def test_a_damaged_card_is_a_warning_not_an_error(tmp_path, daily):
    nbb.sweep(SmaCross, daily, GRID, save=tmp_path, progress=False)
    (tmp_path / CARD).write_text("{not json")
    with pytest.warns(nbb.NbbacktestWarning, match="card.json.*cannot be read"):
        assert read_card(tmp_path) is None

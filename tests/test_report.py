"""SweepResult.report: one HTML file that opens offline, with every row, the card, charts and failures."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

import nbbacktest as nbb
from nbbacktest.display.report import ReportPathError, card_html, script_json, write_report
from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.examples import SmaCross
from nbbacktest.errors import NbbacktestError
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.rows import RowsBuilder, StatSchema
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult, SweepWriter

#: A string that plotly.js holds once, in its licence header.
PLOTLY_MARKER = "plotly.js v"
MEGABYTE = 1_000_000


class Fragile(SmaCross):
    """Raises for fast=10."""

    def signals(self, data):
        if self.fast == 10:
            raise ValueError("fast=10 is not allowed </script><b>")
        return super().signals(data)


class Three(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)
    band = nbb.Param(0.0, low=0.0, high=0.1)

    def signals(self, data):
        close = data["Close"]
        slow = close.rolling(self.slow).mean() * (1 + self.band)
        return (close.rolling(self.fast).mean() > slow).astype(float)


class Flat(nbb.Strategy):
    """Two params that change nothing: a grid of any size, each run a flat line."""

    a = 0
    b = 0

    def signals(self, data):
        return data["Close"] * 0.0


@pytest.fixture(scope="module")
def daily():
    return nbb.load_sample("daily")


@pytest.fixture(scope="module")
def sweep(daily):
    """A finished 9-run sweep without a run card (the card's own test sets one)."""
    result = nbb.sweep(SmaCross, daily, grid={"fast": [5, 10, 20], "slow": [20, 40, 60]}, progress=False)
    result.card = None
    return result


def outside_plotly(page: str) -> str:
    """The page less plotly.js (whose own code holds links it never follows)."""
    return page.replace(get_plotlyjs(), "")


def table_data(page: str) -> dict:
    found = re.search(r"<script type='application/json' id='results-data'>(.*?)</script>", page, re.S)
    assert found, "no results JSON in the page"
    return json.loads(found.group(1))


def column(data: dict, name: str) -> dict:
    return next(c for c in data["columns"] if c["name"] == name)


def sections(page: str) -> list[str]:
    return re.findall(r"<section id='([a-z]+)'>", page)


def test_the_report_is_one_offline_file_with_plotly_once(sweep, tmp_path):
    path = sweep.report(tmp_path / "sweep.html")
    assert path == tmp_path / "sweep.html"
    page = path.read_text(encoding="utf-8")
    assert page.count(PLOTLY_MARKER) == 1
    assert page.count(get_plotlyjs()) == 1
    rest = outside_plotly(page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?|wss?):|//""", rest, re.I)
    assert not re.search(r"<script[^>]*\ssrc=", rest, re.I)
    assert "<link" not in rest and "@import" not in rest and "url(" not in rest
    assert "default-src 'none'" in rest  # the browser itself refuses any request
    assert rest.count("<script type='application/json' data-figure=") == 2  # heatmap, best equity
    assert sections(page) == ["results", "chart", "best"]  # no card, no failures
    assert "SmaCross: complete; 9 of 9 runs done, 0 failed, 0 cancelled; metric sharpe" in page


def test_every_row_is_in_the_table_json_best_first(sweep, tmp_path):
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    data = table_data(page)
    assert sorted(data["rows"]) == list(range(len(sweep)))
    assert data["best"] == sweep.best_index == data["rows"][0]
    names = [c["name"] for c in data["columns"]]
    assert names[:4] == ["row", "fast", "slow", "sharpe"]
    assert names[-2:] == ["status", "error"]
    assert {"return_pct", "max_drawdown_pct", "trades"} <= set(names)
    results = sweep.results
    fast = column(data, "fast")["values"]
    sharpe = column(data, "sharpe")["values"]
    for position, row in enumerate(data["rows"]):
        assert fast[position] == results.at[row, "fast"]
        expected = results.at[row, "sharpe"]
        if math.isnan(expected):
            assert sharpe[position] is None
        else:
            assert sharpe[position] == pytest.approx(expected, rel=1e-9)
    assert column(data, "return_pct")["text"][0].endswith("%")


def test_the_card_shows_every_key_and_folds_long_text(sweep, tmp_path):
    source = "class SmaCross(nbb.Strategy):\n    fast = 10\n    # </script><img src=x>\n"
    sweep.card = {"strategy": "SmaCross", "source": source, "source_hash": "ab12",
                  "data": {"daily": "f00d"}, "grid": {"fast": [5, 10, 20], "slow": range(20, 80, 20)},
                  "where": None, "seed": 0, "settings": {"cash": 10_000.0, "commission": 0.0},
                  "versions": {"python": "3.11", "nbbacktest": "0.1"}}
    try:
        page = sweep.report(tmp_path / "card.html").read_text(encoding="utf-8")
    finally:
        sweep.card = None
    assert sections(page) == ["card", "results", "chart", "best"]
    card = page[page.index("<section id='card'>"):page.index("<section id='results'>")]
    for key in sweep_card_keys():
        assert f"<th>{key}</th>" in card
    assert "<details><summary>source (4 lines)</summary>" in card
    assert "&lt;/script&gt;&lt;img src=x&gt;" in card and "<img" not in card
    assert "<th>daily</th><td>f00d</td>" in card and "<td>5, 10, 20</td>" in card


def sweep_card_keys() -> list[str]:
    return ["strategy", "source", "source_hash", "data", "grid", "where", "seed", "settings", "versions"]


def test_card_html_renders_nested_and_empty_values():
    text = card_html({"trials": [{"n": 1}, {"n": 2}], "empty": {}, "none": [],
                      "deep": {"a": {"b": {"c": {"d": 1}}}}})
    assert text.count("<th>n</th>") == 2 and text.count("<i>none</i>") == 2
    assert "<summary>d" in text or "&quot;d&quot;" in text  # past the depth limit: as text


def test_failures_are_listed_with_the_first_traceback(daily, tmp_path):
    fragile = nbb.sweep(Fragile, daily, grid={"fast": [5, 10, 20], "slow": [40, 60]}, progress=False)
    fragile.card = None
    page = fragile.report(tmp_path / "f.html").read_text(encoding="utf-8")
    assert sections(page) == ["results", "chart", "best", "failures"]
    failures = page[page.index("<section id='failures'>"):]
    assert "Failures: 2 runs" in failures
    assert failures.count("<td class='error'>") == 2
    assert "ValueError: fast=10 is not allowed &lt;/script&gt;&lt;b&gt;" in failures
    assert "<details><summary>Traceback of row 2</summary><pre>Traceback" in failures
    data = table_data(page)
    error = column(data, "error")["text"]
    status = column(data, "status")["text"]
    assert sorted(s for s in status) == ["done"] * 4 + ["failed"] * 2
    assert all(("fast=10" in e) == (s == "failed") for e, s in zip(map(str, error), status))
    # the message's "</script>" cannot end the JSON's script: it reads back whole
    assert "\\u003c/script\\u003e" in page and "1 failed" not in page


def test_one_param_draws_the_metric_against_it(daily, tmp_path):
    one = nbb.sweep(SmaCross, daily, grid={"fast": [5, 10, 20]}, progress=False)
    page = one.report(tmp_path / "one.html").read_text(encoding="utf-8")
    assert "<section id='chart'><h2>sharpe by fast</h2>" in page


def test_three_params_draw_parallel_coordinates(daily, tmp_path):
    three = nbb.sweep(Three, daily, grid={"fast": [5, 10], "slow": [20, 40], "band": [0.0, 0.01]},
                      progress=False)
    page = three.report(tmp_path / "three.html").read_text(encoding="utf-8")
    assert "<section id='chart'><h2>sharpe across the params</h2>" in page
    assert '"type":"parcoords"' in page


def test_a_single_point_draws_the_distribution(daily, tmp_path):
    single = nbb.sweep(SmaCross, daily, progress=False)
    page = single.report(tmp_path / "single.html").read_text(encoding="utf-8")
    assert "<section id='chart'><h2>Distribution of sharpe</h2>" in page


def test_mixed_classes_draw_the_distribution(daily, tmp_path):
    from nbbacktest.engine.examples import SmaCrossEvent

    mixed = nbb.run_many([SmaCross(10, 30), SmaCrossEvent(5, 20)], daily, progress=False)
    page = mixed.report(tmp_path / "mixed.html").read_text(encoding="utf-8")
    assert "<section id='chart'><h2>Distribution of sharpe</h2>" in page
    assert "SmaCross, SmaCrossEvent: complete; 2 of 2 runs done" in page
    assert [c["name"] for c in table_data(page)["columns"]][:4] == ["row", "strategy", "params", "sharpe"]


def test_a_universe_folds_the_symbols_into_the_heatmap(tmp_path):
    universe = nbb.load_sample("universe")
    universe = {symbol: universe[symbol].iloc[:600] for symbol in list(universe)[:2]}
    swept = nbb.sweep(SmaCross, universe, grid={"fast": [5, 10], "slow": [20, 40]}, progress=False)
    page = swept.report(tmp_path / "universe.html").read_text(encoding="utf-8")
    assert "<section id='chart'><h2>sharpe by fast and slow</h2>" in page
    data = table_data(page)
    assert sorted(data["rows"]) == list(range(8))
    assert sorted(set(column(data, "symbol")["text"])) == sorted(universe)


def test_the_card_a_sweep_makes_is_shown_when_there_is_one(daily, tmp_path):
    made = nbb.sweep(SmaCross, daily, grid={"fast": [5, 10]}, progress=False)
    page = made.report(tmp_path / "made.html").read_text(encoding="utf-8")
    card = getattr(made, "card", None)
    assert ("<section id='card'>" in page) == (card is not None)
    for key in card or {}:
        assert f"<th>{key}</th>" in page


def test_a_running_sweep_reports_what_has_finished(daily, tmp_path):
    running = SweepResult(SweepSpec(plan_sweep(SmaCross, {"fast": [5, 10, 20]}), Settings()), daily)
    writer = SweepWriter(running)
    writer.started(engines=0)
    page = running.report(tmp_path / "running.html").read_text(encoding="utf-8")
    assert "SmaCross: running; 0 of 3 runs done" in page and "3 not finished yet" in page
    assert "No best run to show: no run has finished with a value yet." in page
    rows = RowsBuilder(running.spec.schema)
    rows.failed(1, ("ValueError", "bad", "Traceback ...\nValueError: bad"), 0.01)
    writer.record(rows.build(), engine=-1, host="here")
    page = running.report(tmp_path / "running.html").read_text(encoding="utf-8")
    assert "SmaCross: running; 0 of 3 runs done, 1 failed, 0 cancelled, 2 not finished yet" in page
    assert sections(page) == ["results", "chart", "best", "failures"]
    assert column(table_data(page), "status")["text"] == ["pending", "failed", "pending"]  # grid order


@pytest.mark.parametrize("path", [None, 3, b"report.html", ["report.html"]])
def test_a_path_that_is_no_path_is_a_type_error_naming_it(sweep, path):
    with pytest.raises(TypeError, match="^path must be a str or os.PathLike"):
        sweep.report(path)


def test_a_missing_folder_is_a_clear_error_naming_the_path(sweep, tmp_path):
    target = tmp_path / "no" / "such" / "report.html"
    with pytest.raises(ReportPathError, match=re.escape(str(target.parent))) as caught:
        sweep.report(target)
    assert isinstance(caught.value, NbbacktestError) and isinstance(caught.value, OSError)
    assert str(target) in str(caught.value)
    assert not target.parent.exists()


def test_a_folder_as_path_is_refused_and_a_file_is_replaced(sweep, tmp_path):
    with pytest.raises(ReportPathError, match="is a folder: name the file to write"):
        sweep.report(tmp_path)
    target = tmp_path / "again.html"
    target.write_text("old")
    sweep.report(str(target))
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.html"]  # no temporary file left


def test_script_json_cannot_close_its_script():
    text = script_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}
    with pytest.raises(ValueError):
        script_json(float("nan"))


def fabricated_sweep(daily, side: int = 100, failing_every: int = 97) -> SweepResult:
    """A finished ``side`` x ``side`` sweep whose rows were restored from made-up saved rows."""
    spec = SweepSpec(plan_sweep(Flat, {"a": range(side), "b": range(side)}), Settings())
    result = SweepResult(spec, daily)
    schema = StatSchema.current()
    rng = np.random.default_rng(0)
    stats_of_all = {name: rng.normal(size=side * side) * 37.0 for name in schema.floats}
    saved = []
    for row in range(side * side):
        if row % failing_every == 5:
            error = ("ValueError", f"run {row} raised", "Traceback (most recent call last):\n  ...\n"
                     f"ValueError: run {row} raised")
            saved.append((row, None, error, 0.001, 0, "here"))
            continue
        stats = {name: float(values[row]) for name, values in stats_of_all.items()}
        stats.update({name: int(rng.integers(0, 200)) for name in schema.ints})
        saved.append((row, stats, None, 0.0012345, row % 8, "here"))
    writer = SweepWriter(result)
    writer.restore(saved)
    writer.started(engines=0)
    writer.finish()
    return result


def test_a_10000_run_report_stays_under_10_mb(daily, tmp_path):
    big = fabricated_sweep(daily)
    assert len(big) == 10_000 and big.status == "complete"
    started = time.perf_counter()
    path = big.report(tmp_path / "big.html")
    seconds = time.perf_counter() - started
    size = os.path.getsize(path)
    print(f"\n10,000-run report: {size:,} bytes ({size / MEGABYTE:.2f} MB; plotly.js "
          f"{len(get_plotlyjs()):,}) written in {seconds:.1f} s")
    assert size <= 10 * MEGABYTE
    page = Path(path).read_text(encoding="utf-8")
    data = table_data(page)
    assert sorted(data["rows"]) == list(range(10_000))
    assert "Failures: 104 runs" in page and "and 0 more" not in page

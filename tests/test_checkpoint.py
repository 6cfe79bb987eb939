"""Checkpoints (parallel/checkpoint.py): code changes, locking, full disks, damage, signatures."""

from __future__ import annotations

import errno
import importlib
import json
import linecache
import math
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import Sleepy, SmaCross

import nbbacktest as nbb
from nbbacktest.errors import NbbacktestError, NbbacktestWarning, SweepError
from nbbacktest.parallel import checkpoint
from nbbacktest.parallel.checkpoint import (
    DATA_DIR_ENV,
    DATA_PICKLE,
    FORMAT,
    ROWS,
    SECRET,
    SPEC_JSON,
    SPEC_PICKLE,
    load_spec,
    read_rows,
)
from nbbacktest.parallel.trust import secret_key

pytestmark = pytest.mark.timeout(120)
GRID = {"fast": [5, 10, 15, 20, 25], "slow": [40, 80]}
RUN_ONLY = ["engine", "host", "seconds"]


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's user key, in a directory of its own (never the real user's)."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "user"))
    return tmp_path / "user" / SECRET


def save(folder, data, grid=GRID, strategy=SmaCross, **options):
    return nbb.sweep(strategy, data, grid, save=folder, progress=False, **options)


# ------------------------------------------------------------------ 5: the strategy's code changed
STRATEGIES = '''
import nbbacktest as nbb

class Base(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)

    def cross(self, data):
        close = data["Close"]
        return close.rolling(self.fast).mean() > close.rolling(self.slow).mean()


class Cross(Base):
    def signals(self, data):
        return self.cross(data).astype(float)
'''


def test_resume_after_a_change_to_a_base_class_is_refused_naming_it(tmp_path, monkeypatch, daily):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_strategies.py").write_text(STRATEGIES.replace("mean() >", "mean() <"))  # the bug
    module = importlib.import_module("my_strategies")
    monkeypatch.setitem(sys.modules, "my_strategies", module)  # removed at the end
    folder = tmp_path / "run"
    buggy = save(folder, daily, strategy=module.Cross)
    assert set(load_spec(folder)["code"]) == {"my_strategies.Base", "my_strategies.Cross"}
    lines = (folder / ROWS).read_bytes().splitlines(keepends=True)
    (folder / ROWS).write_bytes(b"".join(lines[:4]))

    (tmp_path / "my_strategies.py").write_text(STRATEGIES)  # the fix, in the base class
    fixed = importlib.reload(module).Cross
    with pytest.raises(SweepError) as refused:
        save(folder, daily, strategy=fixed, resume=True)
    message = str(refused.value)
    assert str(folder) in message and "the code of my_strategies.Base changed" in message
    assert "my_strategies.Cross" not in message and "its 4 saved rows come from other code" in message
    assert "resume='force'" in message and "new directory" in message
    assert len(read_rows(folder)) == 4  # refused before anything was written

    # The checkpoint's own classes (unpickled from it) are its code: nbb.resume goes on.
    old = nbb.resume(folder, progress=False)
    pd.testing.assert_frame_equal(comparable(old.results), comparable(buggy.results))
    # "force" keeps the old rows and records the new code; plain resumes then pass.
    (folder / ROWS).write_bytes(b"".join(lines[:4]))
    forced = save(folder, daily, strategy=fixed, resume="force")
    clean = nbb.sweep(fixed, daily, GRID, progress=False)
    pd.testing.assert_frame_equal(comparable(forced.results.iloc[:4]), comparable(buggy.results.iloc[:4]))
    pd.testing.assert_frame_equal(comparable(forced.results.iloc[4:]), comparable(clean.results.iloc[4:]))
    assert save(folder, daily, strategy=fixed, resume=True).status == "complete"
    assert nbb.resume(folder, progress=False).status == "complete"


CELL = '''
import nbbacktest as nbb

class Cell(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    _band = 0.0  # not a param (underscore): only the code knows it

    def signals(self, data):
        close = data["Close"]
        return (close > close.rolling(self.fast).mean() * (1 + self._band)).astype(float)
'''


def run_cell(source, number):
    """Define ``Cell`` as a notebook does: a fresh file name per run, its lines in linecache."""
    name = f"<cell-{number}>"
    linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)
    namespace = {"__name__": "__main__"}
    exec(compile(source, name, "exec"), namespace)
    return namespace["Cell"]


def test_a_notebook_class_without_source_is_compared_by_its_members(tmp_path, daily):
    first = run_cell(CELL, 1)
    save(tmp_path, daily, {"fast": [5, 10, 20]}, strategy=first)
    [(name, digest)] = load_spec(tmp_path)["code"].items()
    assert name == "__main__.Cell" and digest.startswith("members:")
    # The same cell run again is the same code: the resume goes on.
    assert save(tmp_path, daily, {"fast": [5, 10, 20]}, strategy=run_cell(CELL, 2), resume=True).status == "complete"
    for changed in (CELL.replace("1 + self._band", "1 - self._band"),  # a method's code
                    CELL.replace("_band = 0.0", "_band = 0.01")):       # a plain attribute
        with pytest.raises(SweepError, match=r"the code of __main__\.Cell changed"):
            save(tmp_path, daily, {"fast": [5, 10, 20]}, strategy=run_cell(changed, 3), resume=True)


def test_a_checkpoint_of_an_older_nbbacktest_resumes_with_a_warning(tmp_path, daily):
    save(tmp_path, daily)
    spec = json.loads((tmp_path / SPEC_JSON).read_text())
    del spec["code"]
    spec["format"] = 1
    (tmp_path / SPEC_JSON).write_text(json.dumps(spec))
    with pytest.warns(NbbacktestWarning, match="older nbbacktest.*not.*record the strategy's code"):
        assert save(tmp_path, daily, resume=True).status == "complete"


# ------------------------------------------------------------------ 15: two sweeps, a full disk
class Slowish(Sleepy):
    _pause = 0.05


def test_a_second_sweep_on_a_directory_in_use_fails_at_once_and_the_first_is_unharmed(tmp_path, daily):
    whole = nbb.sweep(SmaCross, daily, GRID, progress=False)
    first = save(tmp_path, daily, {"fast": range(5, 35)}, strategy=Slowish, block=False)
    try:
        started = time.monotonic()
        for again in (lambda: save(tmp_path, daily, {"fast": range(5, 35)}, strategy=Slowish, resume=True),
                      lambda: save(tmp_path, daily),  # another sweep altogether
                      lambda: nbb.resume(tmp_path, progress=False)):
            with pytest.raises(SweepError, match=r"is in use by another sweep in this process: two sweeps cannot write one checkpoint"):
                again()
        assert time.monotonic() - started < 1.0 and not first.done()
    finally:
        first.wait(60)
    assert first.status == "complete" and len(read_rows(tmp_path)) == 30
    assert first.results.status.eq("done").all()
    # The lock went with the sweep: the directory can be resumed, and reused.
    assert save(tmp_path, daily, {"fast": range(5, 35)}, strategy=Slowish, resume=True).status == "complete"
    other = tmp_path / "other"
    save(other, daily)
    pd.testing.assert_frame_equal(comparable(save(other, daily, resume=True).results), comparable(whole.results))


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    folder = tmp_path / "run"
    script = textwrap.dedent(f"""
        import time, nbbacktest as nbb
        class Slow(nbb.Strategy):
            n = 5
            def signals(self, data):
                time.sleep(0.03)
                return (data["Close"] > data["Close"].rolling(self.n).mean()).astype(float)
        nbb.sweep(Slow, nbb.load_sample("daily").iloc[:300], {{"n": range(2, 82)}},
                  save={str(folder)!r}, progress=False)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(read_rows(folder)) < 5:
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        with pytest.raises(SweepError, match=r"in use by a sweep in another process"):
            nbb.resume(folder, progress=False)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
    resumed = nbb.resume(folder, progress=False)  # signed by the child: the same user's key
    assert resumed.status == "complete" and resumed.results.status.eq("done").sum() == 80


def fill_disk_after(monkeypatch, writes):
    """The checkpoint's writes succeed ``writes`` times, then the disk is full (half of that write lands)."""
    secret_key()  # the key exists before the disk fills
    real = checkpoint.write_all
    calls = []

    def write(fd, payload):
        calls.append(len(payload))
        if len(calls) <= writes:
            return real(fd, payload)
        os.write(fd, payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "write_all", write)
    return calls


def check_disk_full(error, folder):
    message = str(error)
    assert f"save={str(folder)!r}" in message and "the disk is full" in message
    assert "resume=True" in message
    assert any(isinstance(e, SweepError) and isinstance(e.__cause__, OSError)
               and e.__cause__.errno == errno.ENOSPC for e in (error, error.__cause__))


def test_a_full_disk_fails_the_sweep_naming_the_directory_and_keeps_the_rows(tmp_path, monkeypatch, daily):
    whole = nbb.sweep(SmaCross, daily, GRID, progress=False)
    fill_disk_after(monkeypatch, 2)
    sweep = save(tmp_path, daily, chunksize=3, block=False)
    sweep.wait(60)
    assert sweep.status == "failed"
    check_disk_full(sweep.exception(), tmp_path)
    # In memory: the first point, the chunk saved and the one the disk refused (1 + 3 + 3 rows).
    done = sweep.results.status.eq("done")
    assert done.sum() == 7
    pd.testing.assert_frame_equal(comparable(sweep.results[done]), comparable(whole.results[done]),
                                  check_dtype=False)  # its cancelled rows have no trades
    saved = sorted(read_rows(tmp_path))  # and a line of the refused chunk, not the one it cut
    assert saved[:4] == [0, 1, 2, 3] and 4 <= len(saved) < 7

    blocking = tmp_path / "blocking"
    with pytest.raises(NbbacktestError) as failed:
        save(blocking, daily, chunksize=3)
    check_disk_full(failed.value, blocking)

    monkeypatch.undo()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "user"))
    again = save(tmp_path, daily, resume=True)
    pd.testing.assert_frame_equal(comparable(again.results), comparable(whole.results))
    lines = (tmp_path / ROWS).read_bytes().splitlines()
    assert sorted(json.loads(line)["row"] for line in lines) == list(range(10))


def test_a_full_disk_fails_a_cluster_sweep_naming_the_directory(tmp_path, monkeypatch, cluster, daily):
    fill_disk_after(monkeypatch, 2)
    sweep = nbb.sweep(SmaCross, daily, {"fast": range(5, 45), "slow": [80]}, save=tmp_path,
                      cluster=cluster, chunksize=2, progress=False, block=False)
    sweep.wait(60)
    assert sweep.status == "failed"
    check_disk_full(sweep.exception(), tmp_path)
    assert sweep.results.status.eq("done").sum() > len(read_rows(tmp_path)) > 0


# ------------------------------------------------------------------ 17: foreign or damaged directories
def _truncate(folder, name):
    payload = (folder / name).read_bytes()
    (folder / name).write_bytes(payload[: len(payload) // 2])


def _replace_state(folder, state):
    (folder / SPEC_PICKLE).write_bytes(pickle.dumps(state))


DAMAGE = {
    "spec.json not JSON": (lambda f: (f / SPEC_JSON).write_text("{not json"),
                           r"its spec\.json cannot be read \(Expecting"),
    "spec.json of another tool": (lambda f: (f / SPEC_JSON).write_text('{"name": "other"}'),
                                  r"its spec\.json has no 'format', 'strategy', 'runs', 'identity', 'data'"),
    "spec.json a list": (lambda f: (f / SPEC_JSON).write_text("[1, 2]"), r"holds a JSON list"),
    "spec.json newer": (lambda f: (f / SPEC_JSON).write_text(
        (f / SPEC_JSON).read_text().replace(f'"format": {FORMAT}', '"format": 99')), r"newer nbbacktest \(format 99"),
    "spec.pkl cut": (lambda f: _truncate(f, SPEC_PICKLE), r"its spec\.pkl cannot be loaded \((EOF|Unpickling)"),
    "spec.pkl garbage": (lambda f: (f / SPEC_PICKLE).write_bytes(b"garbage"),
                         r"its spec\.pkl cannot be loaded \(UnpicklingError"),
    "spec.pkl no plan": (lambda f: _replace_state(f, {"strategy": 1}),
                         r"its spec\.pkl is not a sweep's state \(it has no 'plan'"),
    "spec.pkl not a dict": (lambda f: _replace_state(f, [1]), r"its spec\.pkl holds a list"),
    "data.pkl cut": (lambda f: _truncate(f, DATA_PICKLE), r"its data\.pkl cannot be loaded"),
    "data.pkl gone": (lambda f: (f / DATA_PICKLE).unlink(), r"its data\.pkl is missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_foreign_checkpoint_is_one_clear_error(tmp_path, daily, damage):
    save(tmp_path, daily)
    spoil, fault = DAMAGE[damage]
    spoil(tmp_path)
    calls = [lambda: nbb.resume(tmp_path, progress=False, trusted=True)]
    if "spec.json" in damage:  # what sweep(..., resume=True) reads
        calls += [lambda: save(tmp_path, daily, resume=True), lambda: save(tmp_path, daily)]
    for call in calls:
        with pytest.raises(SweepError) as raised:
            call()
        assert str(tmp_path) in str(raised.value)
        assert raised.match(fault)
    # Untrusted, a changed pickle fails its signature first: one error too, never an unpickling one.
    with pytest.raises(SweepError, match=re.escape(repr(str(tmp_path)))):
        nbb.resume(tmp_path, progress=False)


def test_rows_without_a_spec_are_not_taken_for_a_new_checkpoint(tmp_path, daily):
    (tmp_path / ROWS).write_text('{"row": 0}\n')
    with pytest.raises(SweepError, match=r"is not a usable checkpoint: it has saved rows \(rows\.jsonl\) but no spec\.json"):
        save(tmp_path, daily)
    with pytest.raises(SweepError, match=r"holds no checkpoint \(no spec\.json\)"):
        nbb.resume(tmp_path, progress=False)
    # A directory of another tool is left as it was.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / SPEC_JSON).write_text('{"tool": "other"}')
    with pytest.raises(SweepError, match="is not a usable checkpoint"):
        save(foreign, daily)
    assert os.listdir(foreign) == [SPEC_JSON]


# ------------------------------------------------------------------ 18: a damaged line in rows.jsonl
def test_a_damaged_line_is_named_and_the_rows_after_it_are_kept(tmp_path, daily):
    whole = nbb.sweep(SmaCross, daily, GRID, progress=False)
    save(tmp_path, daily)
    lines = (tmp_path / ROWS).read_bytes().splitlines(keepends=True)
    lines[3] = b"\x00\x00garbage\n"
    lines[6] = b'{"row": "seven", "stats": null}\n'  # JSON, but no saved run
    (tmp_path / ROWS).write_bytes(b"".join(lines))
    with pytest.warns(NbbacktestWarning, match=rf"{ROWS}: lines 4, 7 damaged .*the 8 saved rows before and after are kept"):
        rows = read_rows(tmp_path)
    assert len(rows) == 8 and 9 in rows
    events = []
    with pytest.warns(NbbacktestWarning, match=re.escape(str(tmp_path / ROWS))):
        again = save(tmp_path, daily, resume=True, on_result=events.append)
    assert events[0].finished == 8
    pd.testing.assert_frame_equal(comparable(again.results), comparable(whole.results))


def test_a_half_written_last_line_is_skipped_without_a_warning(tmp_path, daily):
    save(tmp_path, daily)
    payload = (tmp_path / ROWS).read_bytes()
    (tmp_path / ROWS).write_bytes(payload[:-20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(tmp_path)) == 9


# ------------------------------------------------------------------ 21: signed checkpoints
def test_the_key_is_made_on_first_use_for_this_user_only(tmp_path, own_key, daily):
    assert not own_key.exists()
    save(tmp_path / "run", daily)
    assert stat.S_IMODE(own_key.stat().st_mode) == 0o600
    key = secret_key()
    assert len(key) == 32 and secret_key() == key
    signature = load_spec(tmp_path / "run")["signature"]
    assert signature["algorithm"] == "hmac-sha256" and set(signature) == {"algorithm", SPEC_PICKLE, DATA_PICKLE}
    # The signature and the lock add no file to the directory (card.json is the run card,
    # returns.npz the runs' returns for credibility()).
    assert sorted(os.listdir(tmp_path / "run")) == ["card.json", DATA_PICKLE, "returns.npz", ROWS, SPEC_JSON,
                                                    SPEC_PICKLE]
    assert nbb.resume(tmp_path / "run", progress=False).status == "complete"


class Payload:
    """Unpickling this creates ``marker``: code a checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_of_another_user_is_refused_before_anything_is_unpickled(tmp_path, monkeypatch, daily):
    folder = tmp_path / "received"
    save(folder, daily)
    marker = tmp_path / "ran"
    (folder / SPEC_PICKLE).write_bytes(pickle.dumps({"plan": Payload(marker)}))
    with pytest.raises(SweepError) as refused:
        nbb.resume(folder, progress=False)
    message = str(refused.value)
    assert str(folder) in message and "spec.pkl does not match its signature" in message
    assert "holds code" in message and f"nbb.resume({str(folder)!r}, trusted=True)" in message
    assert not marker.exists()
    # The user says it is trusted: it is loaded (here, its code runs).
    with pytest.raises(SweepError, match="not a sweep's state"):
        nbb.resume(folder, progress=False, trusted=True)
    assert marker.exists()


def test_another_key_unsigned_or_changed_data_is_refused_and_trusted_signs_it(tmp_path, monkeypatch, daily):
    folder = tmp_path / "run"
    first = save(folder, daily)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "someone else"))
    with pytest.raises(SweepError, match="spec.pkl does not match its signature .made by another user"):
        nbb.resume(folder, progress=False)
    again = nbb.resume(folder, progress=False, trusted=True)  # and now it is this user's
    pd.testing.assert_frame_equal(comparable(again.results), comparable(first.results))
    assert nbb.resume(folder, progress=False).status == "complete"

    data = pickle.loads((folder / DATA_PICKLE).read_bytes())
    (folder / DATA_PICKLE).write_bytes(pickle.dumps(data.iloc[:-1]))
    with pytest.raises(SweepError, match="data.pkl does not match its signature"):
        nbb.resume(folder, progress=False)
    spec = load_spec(folder)
    for signature, fault in ((None, "it is not signed"), ("x", "the signature in its spec.json is damaged")):
        (folder / SPEC_JSON).write_text(json.dumps({**spec, "signature": signature}))
        with pytest.raises(SweepError, match=fault):
            nbb.resume(folder, progress=False)
    with pytest.raises(TypeError, match="trusted must be True or False, got 'yes'"):
        nbb.resume(folder, progress=False, trusted="yes")


# ------------------------------------------------------------------ a stat added to metrics.py
@pytest.fixture
def new_stats(monkeypatch):
    """Two stats added the way metrics.py declares them (label, kind, value in summarize):
    a float and an object. Nothing else in the package is touched."""
    from nbbacktest.engine import metrics

    labels = {**metrics.STAT_LABELS, "median_trade_pct": "Median Trade [%]", "regime": "Regime"}
    monkeypatch.setattr(metrics, "STAT_LABELS", labels)
    monkeypatch.setattr(metrics, "STAT_NAMES", tuple(labels))
    monkeypatch.setitem(metrics.STAT_KINDS, "regime", "object")
    real = metrics.summarize

    def summarize(line, equity, initial_cash, buy_hold_pct, bars_in_market, trade_pnl, trade_returns,
                  *args, **kwargs):
        stats = real(line, equity, initial_cash, buy_hold_pct, bars_in_market, trade_pnl, trade_returns,
                     *args, **kwargs)
        stats["median_trade_pct"] = float(np.median(trade_returns) * 100) if len(trade_returns) else math.nan
        stats["regime"] = "up" if equity[-1] >= initial_cash else "down"
        return stats

    # Every module that took summarize by name (the simulator) calls the new one.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("nbbacktest.") and getattr(module, "summarize", None) is real:
            monkeypatch.setattr(module, "summarize", summarize)
    return summarize


def test_a_stat_added_to_metrics_reaches_the_table_the_checkpoint_and_a_resume(tmp_path, daily, new_stats):
    folder = tmp_path / "run"
    expected = {}
    for fast, slow in [(5, 40), (10, 40), (15, 80)]:
        stats = nbb.backtest(SmaCross(fast, slow), daily).stats
        expected[(fast, slow)] = (stats["median_trade_pct"], stats["regime"])
    grid = {"fast": [5, 10, 15], "slow": [40, 80]}
    first = nbb.sweep(SmaCross, daily, grid, save=folder, progress=False, metric="median_trade_pct",
                      block=True)
    table = first.results
    # The table: both stats, after the others, with the simulator's values.
    assert list(table.columns[-8:-6]) == ["median_trade_pct", "regime"]
    assert table["median_trade_pct"].dtype == np.float64 and table["regime"].dtype == object
    for (fast, slow), (median, regime) in expected.items():
        row = table[(table.fast == fast) & (table.slow == slow)].iloc[0]
        assert row["median_trade_pct"] == median and row["regime"] == regime
    assert first.best_value == table["median_trade_pct"].max()
    # The checkpoint: every saved line has them.
    saved = read_rows(folder)
    assert len(saved) == 6
    assert all({"median_trade_pct", "regime"} <= set(stats) for _, stats, *_ in saved.values())
    # A resume of a checkpoint with some rows gone runs them again and rebuilds the same table.
    lines = (folder / ROWS).read_bytes().splitlines(keepends=True)
    (folder / ROWS).write_bytes(b"".join(lines[:3]))
    resumed = nbb.resume(folder, progress=False)
    assert resumed.status == "complete"
    pd.testing.assert_frame_equal(comparable(resumed.results), comparable(table))
    assert resumed.row(0)["regime"] == table["regime"][0]

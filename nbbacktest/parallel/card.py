"""The run card: what makes a sweep reproducible, as one JSON-able dict (``sweep.card``).

A sweep's card is made when it launches and completed when it ends. It records

- what ran: the strategy classes (``module.QualName``), the source of each and of
  its bases outside nbbacktest (``source``; None where a class has no source) and a
  digest of it (``source_hash``, the digests a checkpoint compares on resume);
- on what: a content hash of the data, per symbol for a universe (``data``), and
  the symbols the runs use;
- how: the grid (each param's values, a ``{"start", "stop", "step"}`` for evenly
  spaced ints), ``where`` as text, the sample size ``n``, the seed (each run's own
  seed derives from it and the run's params), the settings, the metric and its
  direction, ``stop_on_error``, and the sweep's identity;
- the trials: runs planned and grid size; at the end, runs done, failed and cancelled;
- where and when: package versions, host name, the engines used, ``started`` and
  ``ended`` (ISO times) and ``seconds`` (the time the sweep ran, over all of its
  sessions), ``status`` and ``reason``, and ``resumes`` (one record per resume).

A sweep with ``save=DIR`` keeps its card in ``DIR/card.json``, written when it
starts and rewritten (atomically) when it ends. :func:`card_differences` says, in
words, why two cards' runs may differ (times, host and engines are not reasons).

Examples
--------
>>> import nbbacktest as nbb
>>> from nbbacktest.engine.examples import SmaCross
>>> data = nbb.load_sample("daily")
>>> a = nbb.sweep(SmaCross, data, grid={"fast": range(5, 30, 5)}, progress=False).card
>>> a["grid"], a["trials"]["runs"], a["status"]
({'fast': {'start': 5, 'stop': 30, 'step': 5}}, 5, 'complete')
>>> b = nbb.sweep(SmaCross, data, grid={"fast": range(5, 30, 5)}, commission=0.001,
...               progress=False).card
>>> card_differences(a, b)
['other settings: commission 0.0 vs 0.001']
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbbacktest.engine.data import _warn, is_universe
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.rows import CANCELLED
from nbbacktest.parallel.trust import class_sources, code_digests
from nbbacktest.parallel.where import callable_text

if TYPE_CHECKING:
    import pandas as pd

    from nbbacktest.parallel.spec import SweepSpec
    from nbbacktest.parallel.sweep import SweepResult

__all__ = ["CARD", "CARD_FORMAT", "PACKAGES", "card_differences", "compact_values", "end_card",
           "new_card", "package_versions", "read_card", "resumed_card", "write_card"]

#: The card's file in a save directory.
CARD = "card.json"
#: The card's layout; a reader meets a newer one with a warning, never an error.
CARD_FORMAT = 1
#: The packages whose versions a card records (with Python's): those a run's bits depend on.
PACKAGES = ("nbbacktest", "numpy", "pandas", "ipyparallel", "cloudpickle")

# Fewest evenly spaced ints written as start/stop/step (two values read better as a list).
_MIN_RANGE = 3
# Longest value shown in a difference; the rest is cut with "...".
_SHOWN = 60
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# ---------------------------------------------------------------------- making a card
def now() -> str:
    """This moment as an ISO time with the local UTC offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """The versions of Python and of :data:`PACKAGES` (None for one not installed).

    Examples
    --------
    >>> versions = package_versions()
    >>> list(versions) == ["python", *PACKAGES], versions["python"] == platform.python_version()
    (True, True)
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path
            versions[name] = getattr(sys.modules.get(name), "__version__", None)
    return versions


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy scalars as numbers, tuples as lists, callables as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if callable(value):
        return callable_text(value)
    return _ADDRESS.sub("", repr(value))


def compact_values(values: Sequence[Any]) -> list[Any] | dict[str, Any]:
    """One param's grid values as a card keeps them: evenly spaced ints as a range, else a list.

    Examples
    --------
    >>> compact_values(list(range(5, 60, 5)))
    {'start': 5, 'stop': 60, 'step': 5}
    >>> compact_values([5, 10]), compact_values([0.1, 0.2, 0.3]), compact_values(["sma", "ema"])
    ([5, 10], [0.1, 0.2, 0.3], ['sma', 'ema'])
    """
    items = [jsonable(v) for v in values]
    if len(items) >= _MIN_RANGE and all(type(v) is int for v in items):
        step = items[1] - items[0]
        if step and all(b - a == step for a, b in zip(items, items[1:])):
            return {"start": items[0], "stop": items[-1] + step, "step": step}
    return items


def _grid(spec: SweepSpec) -> Any:
    grid = spec.plan.grid
    if grid is None:
        return None
    subgrids = [{name: compact_values(values) for name, values in sub.items()} for sub in grid]
    return subgrids[0] if len(subgrids) == 1 else subgrids


def _frame_card(frame: pd.DataFrame, key: str | None = None) -> dict[str, Any]:
    index = frame.index
    return {"hash": key or fingerprint(frame), "bars": len(frame),
            "first": str(index[0]) if len(index) else None,
            "last": str(index[-1]) if len(index) else None}


def data_card(data: Any, data_key: str | None = None) -> dict[str, Any]:
    """The data's hash (:func:`~nbbacktest.parallel.fingerprint.fingerprint`), bars and span.

    A universe gets one of each per symbol, under ``symbols``; ``data_key``, the
    fingerprint of a single frame when already computed, is not computed again.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> card = data_card(nbb.load_sample("universe"))
    >>> sorted(card["symbols"])[:2], len(card["symbols"]["AAA"]["hash"])
    (['AAA', 'BBB'], 20)
    """
    if is_universe(data):
        return {"symbols": {str(symbol): _frame_card(frame) for symbol, frame in data.items()}}
    return _frame_card(data, data_key)


def new_card(spec: SweepSpec, data: Any, data_key: str | None = None) -> dict[str, Any]:
    """The card of a sweep that starts now (``status`` "running", no end yet).

    Parameters
    ----------
    spec : SweepSpec
        The sweep.
    data : DataFrame or dict of DataFrame
        Its data (validated).
    data_key : str, optional
        The data's fingerprint, when already computed (a single frame's is its hash).

    Returns
    -------
    dict
        JSON-able; see the module's description of its keys.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.backtest import Settings
    >>> from nbbacktest.engine.examples import SmaCross
    >>> from nbbacktest.parallel.grid import plan_sweep
    >>> from nbbacktest.parallel.spec import SweepSpec
    >>> spec = SweepSpec(plan_sweep(SmaCross, {"fast": [5, 10]}, where="fast < slow"), Settings())
    >>> card = new_card(spec, nbb.load_sample("daily"))
    >>> card["where"], card["seed"], card["status"], card["ended"]
    ('fast < slow', 0, 'running', None)
    """
    plan = spec.plan
    return {
        "format": CARD_FORMAT,
        "strategy": [f"{c.__module__}.{c.__qualname__}" for c in plan.classes],
        "source_hash": code_digests(plan.classes),
        "source": class_sources(plan.classes),
        "data": data_card(data, data_key),
        "symbols": None if plan.universe is None else list(plan.universe),
        "grid": _grid(spec),
        "where": plan.where,
        "sample": plan.sample,
        "seed": plan.seed,
        "settings": jsonable(dataclasses.asdict(spec.settings)),
        "metric": spec.metric,
        "direction": "maximize" if spec.maximize else "minimize",
        "stop_on_error": spec.stop_on_error,
        "min_trades": spec.min_trades,
        "identity": spec.identity(),
        "trials": {"runs": len(plan), "grid_size": plan.grid_size},
        "versions": package_versions(),
        "host": socket.gethostname(),
        "engines": None,
        "started": now(),
        "ended": None,
        "seconds": None,
        "status": "running",
        "reason": "",
        "resumes": [],
    }


def resumed_card(card: dict[str, Any], previous: Mapping[str, Any] | None, *, restored: int,
                 created: str | None = None) -> dict[str, Any]:
    """``card`` for a sweep that goes on from a checkpoint: its first start, and this resume.

    ``previous`` is the checkpoint's card (None for a checkpoint older than cards,
    whose ``created``, from its spec.json, is then taken as the start); ``restored``
    the rows it held. The sources recorded at the first start are kept when the
    code's digests are the same (classes unpickled from the checkpoint may have
    no source of their own here).
    """
    record: dict[str, Any] = {"at": card["started"], "restored": restored, "host": card["host"]}
    if previous is None:
        card["started"] = created or card["started"]
    else:
        if previous.get("versions") and previous.get("versions") != card["versions"]:
            record["versions"] = card["versions"]
            card["versions"] = previous["versions"]
        if previous.get("source_hash") == card["source_hash"] and previous.get("source"):
            card["source"] = previous["source"]
        card["started"] = previous.get("started") or card["started"]
        card["host"] = previous.get("host") or card["host"]
        card["seconds"] = previous.get("seconds")
    resumes = previous.get("resumes") if previous is not None else None
    card["resumes"] = [*(resumes if isinstance(resumes, list) else []), record]
    return card


def end_card(card: dict[str, Any], result: SweepResult) -> dict[str, Any]:
    """Complete ``card`` when ``result`` ends: end time, seconds, status, counts, engines."""
    store = result.store
    finished, failed = store.counts()
    card["ended"] = now()
    ran = result.seconds if math.isfinite(result.seconds) else 0.0
    card["seconds"] = round((card.get("seconds") or 0.0) + ran, 3)
    card["status"], card["reason"] = result.status, result.reason
    card["trials"] = {**card.get("trials", {}), "done": finished - failed, "failed": failed,
                      "cancelled": store.count(CANCELLED)}
    hosts = sorted({str(h) for h in store.host.tolist() if h is not None})
    card["engines"] = {"count": result.engines, "hosts": hosts}
    return card


# ---------------------------------------------------------------------- the file
def write_card(folder: str | os.PathLike[str], card: Mapping[str, Any]) -> None:
    """Write ``card`` to ``folder/card.json`` atomically (a reader sees the old or the new)."""
    path = Path(folder) / CARD
    temporary = path.with_suffix(".json.tmp")
    temporary.write_bytes(json.dumps(card, indent=2, default=str).encode())
    os.replace(temporary, path)


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The card in ``folder``; None when it has none (a checkpoint older than cards).

    A damaged card is reported with a warning and read as None: it describes the
    sweep, the checkpoint's other files are what load and resume it.

    Examples
    --------
    >>> import tempfile
    >>> read_card(tempfile.mkdtemp()) is None
    True
    """
    path = Path(folder) / CARD
    try:
        card = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        _warn(f"{str(path)!r} cannot be read ({error}): the sweep's run card is left out")
        return None
    if not isinstance(card, dict):
        _warn(f"{str(path)!r} holds a JSON {type(card).__name__}, not a run card: it is left out")
        return None
    return card


# ---------------------------------------------------------------------- comparing
def _short(value: Any, quote: bool = True) -> str:
    """``value`` as a difference shows it: a range as start:stop:step, a str quoted or not."""
    if isinstance(value, dict) and set(value) == {"start", "stop", "step"}:
        text = f"{value['start']}:{value['stop']}:{value['step']}"
    elif isinstance(value, str) and not quote:
        text = value
    else:
        text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _names(names: Sequence[str]) -> str:
    return ", ".join(str(n) for n in names)


def _pairs(a: Mapping[str, Any], b: Mapping[str, Any], skip_missing: bool = False,
           quote: bool = True) -> str:
    """``key a vs b`` for every key whose values differ."""
    parts = []
    for key in dict.fromkeys([*a, *b]):
        if key in a and key in b:
            if a[key] != b[key]:
                parts.append(f"{key} {_short(a[key], quote)} vs {_short(b[key], quote)}")
        elif not skip_missing:
            parts.append(f"{key} only in the {'first' if key in a else 'second'}")
    return ", ".join(parts)


def _code(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    changed = [name for name in dict.fromkeys([*a, *b]) if a.get(name) != b.get(name)]
    if not changed:
        return ""
    short = [name.rsplit(".", 1)[-1] for name in changed]
    return (f"{short[0]}'s source differs" if len(short) == 1
            else f"the sources of {_names(short)} differ")


def _data(a: Any, b: Any) -> str:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    sa, sb = a.get("symbols"), b.get("symbols")
    if sa is None and sb is None:
        return "" if a.get("hash") == b.get("hash") else "the frame differs"
    if sa is None or sb is None:
        return f"a single frame vs a universe of {len(sa or sb or ())} symbols"
    differ = [s for s in sa if s in sb and sa[s].get("hash") != sb[s].get("hash")]
    parts = []
    if differ:
        parts.append(f"symbol {differ[0]} differs" if len(differ) == 1
                     else f"symbols {_names(differ)} differ")
    for which, mine, other in (("first", sa, sb), ("second", sb, sa)):
        only = [s for s in mine if s not in other]
        if only:
            parts.append(f"{_names(only)} only in the {which}")
    return "; ".join(parts)


def _grid_text(a: Any, b: Any) -> str:
    if a == b:
        return ""
    if isinstance(a, dict) and isinstance(b, dict):
        return _pairs(a, b)
    return f"{_short(a)} vs {_short(b)}"


def card_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Why the runs of two cards may differ, in words; empty when they are the same computation.

    Compares the strategy and its source, the data (per symbol), the symbols, the
    settings, grid, ``where``, sample, seed, metric and direction, ``stop_on_error``
    and the package versions. Times, host, engines, status and counts are no
    reason: the same computation gives the same table wherever and whenever it
    runs. A key that a card lacks (an older card) is not compared.

    Parameters
    ----------
    a, b : dict
        Two cards (``sweep.card``, or read from a save directory's ``card.json``).

    Returns
    -------
    list of str
        One line per kind of difference ("other data: symbols AAA, BBB differ").

    Examples
    --------
    >>> a = {"seed": 0, "settings": {"commission": 0.001, "cash": 10000.0},
    ...      "versions": {"pandas": "3.0.0"}, "host": "here"}
    >>> b = {"seed": 1, "settings": {"commission": 0.002, "cash": 10000.0},
    ...      "versions": {"pandas": "3.0.1"}, "host": "there"}
    >>> for line in card_differences(a, b):
    ...     print(line)
    other settings: commission 0.001 vs 0.002
    other seed: 0 vs 1
    other package versions: pandas 3.0.0 vs 3.0.1
    >>> card_differences(a, dict(a, host="elsewhere", started="2025-01-01T00:00:00"))
    []
    """
    def both(key: str) -> bool:
        return key in a and key in b

    out = []
    if both("strategy") and a["strategy"] != b["strategy"]:
        out.append(f"other strategy: {_names(a['strategy'])} vs {_names(b['strategy'])}")
    elif both("source_hash") and (code := _code(a["source_hash"], b["source_hash"])):
        out.append(f"other code: {code}")
    if both("data") and (data := _data(a["data"], b["data"])):
        out.append(f"other data: {data}")
    if both("symbols") and a["symbols"] != b["symbols"]:
        out.append(f"other symbols: {_short(a['symbols'])} vs {_short(b['symbols'])}")
    if both("settings") and (settings := _pairs(a["settings"], b["settings"])):
        out.append(f"other settings: {settings}")
    if both("grid") and (grid := _grid_text(a["grid"], b["grid"])):
        out.append(f"other grid: {grid}")
    for key, label in (("where", "where"), ("sample", "sample (n)"), ("seed", "seed"),
                       ("metric", "metric"), ("direction", "direction"),
                       ("stop_on_error", "stop_on_error"), ("min_trades", "min_trades")):
        if both(key) and a[key] != b[key]:
            quote = key == "where"
            out.append(f"other {label}: {_short(a[key], quote)} vs {_short(b[key], quote)}")
    if both("versions") and (versions := _pairs(a["versions"] or {}, b["versions"] or {},
                                                skip_missing=True, quote=False)):
        out.append(f"other package versions: {versions}")
    if not out and both("identity") and a["identity"] != b["identity"]:
        out.append("other runs: the planned points differ (the strategy instances or their order)")
    return out

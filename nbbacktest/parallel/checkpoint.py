"""Checkpoints: a sweep's save directory, written row by row as results arrive.

A directory holds

- ``spec.json``: what the sweep is (strategy, grid size, settings, data fingerprint),
  for people; ``spec.pkl``: the same for :func:`nbbacktest.resume` (the plan with its
  strategy classes by value, settings, metric), so a new process can go on;
- ``data.pkl``: the data, written once, so that ``resume(dir)`` needs nothing else;
- ``rows.jsonl``: one JSON line per finished run (done or failed), appended as rows
  arrive. A line is written with a single ``write`` on a file opened for appending;
  a process killed mid-write leaves at most a last line without its newline, which
  :func:`read_rows` detects and skips (and the next writer cuts off). Files are not
  fsync'ed (that would cost more than the sweep on fast points): a killed process
  loses nothing, a machine that loses power may lose the last rows the OS held;
- ``errors.log``: each failed run's params, error and engine-side traceback, as text.

Floats survive the JSON round trip to the bit (``repr`` is exact), so a resumed sweep's
table equals an uninterrupted run's.

Examples
--------
>>> import tempfile, nbbacktest as nbb
>>> from nbbacktest.engine.examples import SmaCross
>>> folder = tempfile.mkdtemp()
>>> runs = nbb.run_many([SmaCross(5, 40), SmaCross(10, 40)], nbb.load_sample("daily"),
...                     save=folder, progress=False)
>>> sorted(read_rows(folder)), load_spec(folder)["runs"]
([0, 1], 2)
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from nbbacktest.errors import SweepError
from nbbacktest.parallel import pickling

SPEC_JSON, SPEC_PICKLE, DATA_PICKLE = "spec.json", "spec.pkl", "data.pkl"
ROWS, ERRORS = "rows.jsonl", "errors.log"
FORMAT = 1

#: One saved run: (row, stats or None, (type, message, traceback) or None, seconds, engine, host).
SavedRow = tuple[int, "dict[str, Any] | None", "tuple[str, str, str] | None", float, int, "str | None"]


def _encode(value: Any) -> Any:
    # Timestamps and Timedeltas keep their unit and zone, so the table rebuilds identically.
    if isinstance(value, pd.Timestamp):
        return {"$ts": int(value.value), "unit": value.unit, "tz": None if value.tz is None else str(value.tz)}
    if isinstance(value, pd.Timedelta):
        return {"$td": int(value.value), "unit": value.unit}
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _decode(obj: dict[str, Any]) -> Any:
    if "$ts" in obj:
        stamp = pd.Timestamp(obj["$ts"], unit="ns", tz="UTC" if obj["tz"] else None)
        if obj["tz"]:
            stamp = stamp.tz_convert(obj["tz"])
        return stamp.as_unit(obj["unit"])
    if "$td" in obj:
        return pd.Timedelta(obj["$td"], unit="ns").as_unit(obj["unit"])
    return obj


def read_rows(folder: str | os.PathLike[str]) -> dict[int, SavedRow]:
    """The runs saved in ``folder``, by row; a half-written last line is skipped.

    A row saved twice (an engine's chunk requeued after it had reported) keeps its
    first record.
    """
    path = Path(folder) / ROWS
    rows: dict[int, SavedRow] = {}
    if not path.exists():
        return rows
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                break  # the writer died mid-line
            try:
                record = json.loads(line, object_hook=_decode)
            except ValueError:
                break
            row = record["row"]
            if row not in rows:
                error = record["error"]
                rows[row] = (row, record["stats"], None if error is None else tuple(error),
                             record["seconds"], record["engine"], record["host"])
    return rows


def _complete_length(path: Path) -> int:
    """Bytes of ``path`` up to the end of its last complete line."""
    with open(path, "rb") as file:
        data = file.read()
    return data.rfind(b"\n") + 1


class Checkpoint:
    """An open save directory: appends rows and errors as they arrive.

    Use :meth:`open` to create or reopen one.
    """

    def __init__(self, folder: Path, spec: dict[str, Any]) -> None:
        self.folder = folder
        self.spec = spec
        rows = folder / ROWS
        if rows.exists():
            good = _complete_length(rows)
            if good < rows.stat().st_size:
                os.truncate(rows, good)  # drop a half-written last line before appending
        self._rows = os.open(rows, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._errors: int | None = None

    @classmethod
    def open(
        cls,
        save: Any,
        *,
        spec: dict[str, Any],
        state: dict[str, Any],
        data: Any,
        resume: bool,
    ) -> tuple[Checkpoint, dict[int, SavedRow]]:
        """Create ``save`` (or reopen it with ``resume``); returns it and the rows saved.

        ``spec`` identifies the sweep (compared on resume); ``state`` is what
        ``nbbacktest.resume`` needs to rebuild it (pickled by value).
        """
        if not isinstance(save, (str, os.PathLike)):
            raise TypeError(f"save must be a directory path, got {type(save).__name__}")
        folder = Path(save)
        if folder.exists() and not folder.is_dir():
            raise SweepError(f"save={str(save)!r} is a file, not a directory")
        saved_spec = load_spec(folder) if (folder / SPEC_JSON).exists() else None
        rows: dict[int, SavedRow] = {}
        if saved_spec is not None:
            if not resume:
                count = len(read_rows(folder))
                raise SweepError(
                    f"save={str(save)!r} already holds a checkpoint ({count} of "
                    f"{saved_spec['runs']} runs saved): pass resume=True to go on from it, "
                    "or choose another directory"
                )
            different = [k for k in ("identity", "data") if saved_spec.get(k) != spec[k]]
            if different:
                what = " and ".join("the data" if k == "data" else "the strategy, grid or settings"
                                    for k in different)
                raise SweepError(
                    f"cannot resume from save={str(save)!r}: {what} differ from the saved sweep's "
                    f"({saved_spec['strategy']}, {saved_spec['runs']} runs); use another directory"
                )
            rows = read_rows(folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / DATA_PICKLE, pickle.dumps(data, protocol=5))
            _write_atomic(folder / SPEC_PICKLE, state_bytes(state))
            _write_atomic(folder / SPEC_JSON, json.dumps(spec, indent=2, default=str).encode())
        return cls(folder, spec), rows

    def append(self, rows: Iterable[SavedRow], describe: Any) -> None:
        """Save finished runs; ``describe(row)`` gives the params shown in errors.log."""
        lines = []
        errors = []
        for row, stats, error, seconds, engine, host in rows:
            record = {"row": row, "stats": stats, "error": error, "seconds": seconds,
                      "engine": engine, "host": host}
            lines.append(json.dumps(record, default=_encode, separators=(",", ":")))
            if error is not None:
                errors.append(
                    f"--- row {row} ({describe(row)}) on engine {engine}, host {host}, "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n{error[0]}: {error[1]}\n{error[2]}\n"
                )
        if lines:
            os.write(self._rows, ("\n".join(lines) + "\n").encode())
        if errors:
            if self._errors is None:
                self._errors = os.open(self.folder / ERRORS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._errors, "".join(errors).encode())

    def close(self) -> None:
        """Close the files (each write already reached the OS: a killed process loses nothing)."""
        for fd in (self._rows, self._errors):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._rows = self._errors = None


def _write_atomic(path: Path, payload: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        file.write(payload)
    os.replace(temporary, path)


def state_bytes(state: dict[str, Any]) -> bytes:
    """Pickle ``state`` with classes from notebooks and scripts by value (cloudpickle)."""
    return pickling.dumps(state, state["plan"].classes)


def load_spec(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The readable spec of the sweep saved in ``folder``."""
    with open(Path(folder) / SPEC_JSON, encoding="utf-8") as file:
        return json.load(file)


def load_state(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    """What :func:`nbbacktest.resume` needs: the pickled state and the saved data."""
    folder = Path(folder)
    if not (folder / SPEC_PICKLE).exists():
        raise SweepError(
            f"{str(folder)!r} holds no checkpoint (no {SPEC_PICKLE}); "
            "sweep(..., save=DIR) writes one"
        )
    with open(folder / SPEC_PICKLE, "rb") as file:
        state = pickle.load(file)
    with open(folder / DATA_PICKLE, "rb") as file:
        data = pickle.load(file)
    return state, data

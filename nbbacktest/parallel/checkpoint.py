"""Checkpoints: a sweep's save directory, written row by row as results arrive.

A directory holds

- ``spec.json``: what the sweep is (strategy, grid size, settings, data fingerprint,
  a digest of each strategy class's source, the signature of the pickled files), for
  people and for resuming; ``spec.pkl``: what :func:`nbbacktest.resume` needs to go
  on in a new process (the :class:`~nbbacktest.parallel.spec.SweepSpec`, its strategy
  classes by value);
- ``data.pkl``: the data, written once, so that ``resume(dir)`` needs nothing else;
- ``rows.jsonl``: one JSON line per finished run (done or failed), appended as rows
  arrive. A sweep holds a lock (``flock``) on it while it runs, so that a second
  sweep on the directory fails at once instead of corrupting it; the OS releases
  the lock when the sweep ends or its process dies. A line is written with a single
  ``write`` on a file opened for appending; a process killed mid-write leaves at
  most a last line without its newline, which :func:`read_rows` detects and skips
  (and the next writer cuts off). Files are not fsync'ed (that would cost more
  than the sweep on fast points): a killed process loses nothing, a machine that
  loses power may lose the last rows the OS held;
- ``errors.log``: each failed run's params, error and engine-side traceback, as text;
- ``card.json``: the sweep's run card (:mod:`nbbacktest.parallel.card`), written when
  it starts and rewritten when it ends; a directory older than cards has none and
  still loads and resumes.

Floats survive the JSON round trip to the bit (``repr`` is exact), so a resumed sweep's
table equals an uninterrupted run's.

A checkpoint holds code: ``spec.pkl`` carries the strategy classes, and unpickling it
runs whatever its author put there. So :func:`load_state` unpickles only checkpoints
signed on this machine by this user (see :mod:`nbbacktest.parallel.trust`); any
other is refused unless the caller says it is trusted.

Resuming with ``sweep(..., resume=True)`` compares the source of each strategy class
(and of its bases outside nbbacktest) with the digest the checkpoint recorded, and
refuses when it changed: the saved rows were computed by the old code.

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

import contextlib
import errno
import json
import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbbacktest.engine.data import _warn
from nbbacktest.errors import SweepError
from nbbacktest.parallel import pickling
from nbbacktest.parallel.card import write_card
from nbbacktest.parallel.rows import SavedRow, parse_saved_line, saved_line
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.trust import (
    DATA_DIR_ENV,
    DATA_PICKLE,
    SECRET,
    SPEC_JSON,
    SPEC_PICKLE,
    check_signature,
    code_changes,
    code_digests,
    remember_loaded_code,
    signature,
    write_all,
)

try:
    import fcntl
except ImportError:  # Windows: no flock, no lock (see _open_locked)
    fcntl = None  # type: ignore[assignment]

__all__ = ["DATA_DIR_ENV", "DATA_PICKLE", "ERRORS", "FORMAT", "ROWS", "SECRET", "SPEC_JSON",
           "SPEC_PICKLE", "Checkpoint", "SavedRow", "load_spec", "load_state", "read_rows"]

ROWS, ERRORS = "rows.jsonl", "errors.log"
#: 2: spec.json records each strategy class's code digest; the pickled files are signed.
#: 3: spec.pkl holds the SweepSpec itself (with its stat schema).
FORMAT = 3

# What a spec.json must hold to be one of ours.
_SPEC_KEYS = ("format", "strategy", "runs", "identity", "data")
# flock's errors when another holds the lock.
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK}
# The save directories this process holds locks on (to say whose the lock is).
_LOCKED_HERE: set[Path] = set()


# ---------------------------------------------------------------------- rows
def _line_numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5]))
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"line {shown}" if len(numbers) == 1 else f"lines {shown}{more}"


def read_rows(folder: str | os.PathLike[str]) -> dict[int, SavedRow]:
    """The runs saved in ``folder``, by row.

    A half-written last line (its writer was killed mid-line) is skipped. A damaged
    line anywhere else is skipped with a warning that names the file and the line;
    the rows after it are kept. A row saved twice (an engine's chunk requeued after
    it had reported) keeps its first record.

    Parameters
    ----------
    folder : str or path
        A save directory (``sweep(..., save=folder)``).

    Returns
    -------
    dict of int to SavedRow

    Examples
    --------
    >>> import tempfile
    >>> read_rows(tempfile.mkdtemp())
    {}
    """
    path = Path(folder) / ROWS
    rows: dict[int, SavedRow] = {}
    if not path.exists():
        return rows
    damaged = []
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                break  # the last line: the writer died mid-line
            try:
                saved = parse_saved_line(line)
            except (ValueError, KeyError, TypeError):
                damaged.append(number)
                continue
            rows.setdefault(saved[0], saved)
    if damaged:
        _warn(
            f"{path}: {_line_numbers(damaged)} damaged (not a saved run), skipped; the "
            f"{len(rows)} saved rows before and after are kept, and a resume runs the "
            "skipped rows again"
        )
    return rows


def _complete_length(path: Path) -> int:
    """Bytes of ``path`` up to the end of its last complete line."""
    with open(path, "rb") as file:
        data = file.read()
    return data.rfind(b"\n") + 1


# ---------------------------------------------------------------------- the directory
def _damaged(folder: Path, what: str) -> SweepError:
    return SweepError(
        f"{str(folder)!r} is not a usable checkpoint: {what}. It is damaged, or was not "
        "written by nbbacktest: save a new sweep in another directory (or delete this one)"
    )


def _open_locked(folder: Path) -> int:
    """Open ``folder``'s rows.jsonl for appending, locked for this sweep until closed.

    The OS drops the lock when the descriptor is closed or its process dies, so a
    killed sweep never leaves its directory locked. The lock is on rows.jsonl (never
    replaced, unlike the files written whole) so that the directory holds nothing more.
    """
    fd = os.open(folder / ROWS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if fcntl is None:  # Windows: no flock; a second sweep is not kept out
        return fd
    try:
        # flock (not lockf): two sweeps in one process exclude each other too.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in _BUSY:
            return fd  # a file system without locks (ENOLCK): sweep on, unguarded
        os.close(fd)
        who = ("another sweep in this process" if folder.resolve() in _LOCKED_HERE
               else "a sweep in another process")
        raise SweepError(
            f"save={str(folder)!r} is in use by {who}: two sweeps cannot write one checkpoint. "
            "Wait for that sweep to end (or cancel it), or save this one in another directory"
        ) from None
    _LOCKED_HERE.add(folder.resolve())
    return fd


def _close_locked(folder: Path, fd: int) -> None:
    _LOCKED_HERE.discard(folder.resolve())
    with contextlib.suppress(OSError):
        os.close(fd)


class Checkpoint:
    """An open save directory: appends rows and errors as they arrive.

    Use :meth:`open` to create or reopen one; it holds the directory's lock until
    :meth:`close`.
    """

    def __init__(self, folder: Path, spec: dict[str, Any], rows: int) -> None:
        """``rows``: rows.jsonl, opened for appending and locked by :func:`_open_locked`."""
        self.folder = folder
        self.spec = spec
        self._failed: SweepError | None = None
        good = _complete_length(folder / ROWS)
        if good < (folder / ROWS).stat().st_size:
            os.truncate(folder / ROWS, good)  # drop a half-written last line before appending
        self._rows: int | None = rows
        self._errors: int | None = None
        #: The spec.json the directory held before this sweep opened it (None: a new one).
        self.saved_spec: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        save: Any,
        *,
        spec: SweepSpec,
        data: Any,
        data_key: str | None,
        resume: bool | str,
    ) -> tuple[Checkpoint, dict[int, SavedRow]]:
        """Create ``save`` (or reopen it with ``resume``); returns it and the rows saved.

        ``spec`` is the sweep: its summary and identity (compared on resume, with
        the code of its strategy classes) go to ``spec.json``, the spec itself
        (pickled by value, so that ``nbbacktest.resume`` rebuilds it in another
        process) to ``spec.pkl``; ``data_key`` is the data's fingerprint.
        ``resume="force"`` keeps the saved rows although the strategy's code
        changed, and records the new code.
        """
        if not isinstance(save, (str, os.PathLike)):
            raise TypeError(f"save must be a directory path, got {type(save).__name__}")
        folder = Path(save)
        if folder.exists() and not folder.is_dir():
            raise SweepError(f"save={str(save)!r} is a file, not a directory")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            created = not (folder / ROWS).exists()
            # Locked before anything is read: a sweep writing the directory now is refused.
            fd = _open_locked(folder)
        except OSError as error:
            raise SweepError(
                f"save={str(save)!r}: cannot write a checkpoint there ({error.strerror or error});"
                " choose a directory you can write to"
            ) from error
        try:
            summary = {**spec.summary(data_key), "format": FORMAT,
                       "code": code_digests(spec.plan.classes)}
            saved_spec = load_spec(folder) if (folder / SPEC_JSON).exists() else None
            if saved_spec is None and (folder / ROWS).stat().st_size:
                raise _damaged(folder, f"it has saved rows ({ROWS}) but no {SPEC_JSON}")
            rows: dict[int, SavedRow] = {}
            write = saved_spec is None
            if saved_spec is not None:
                rows = cls._check_resume(folder, saved_spec, summary, resume)
                write = resume == "force" and saved_spec.get("code") != summary["code"]
            if write:
                payloads = {DATA_PICKLE: pickle.dumps(data, protocol=5), SPEC_PICKLE: spec_bytes(spec)}
                for name, payload in payloads.items():
                    _write_atomic(folder / name, payload)
                signed = signature(folder, payloads)
                if signed is not None:
                    summary["signature"] = signed
                # Last: a directory with spec.json is a complete checkpoint.
                _write_spec(folder, summary)
            checkpoint = cls(folder, summary, fd)
            checkpoint.saved_spec = saved_spec
            return checkpoint, rows
        except BaseException:
            if created and not (folder / ROWS).stat().st_size:
                # Leave a refused directory as it was (unlinked before the lock goes,
                # so that no other sweep has opened this file meanwhile).
                (folder / ROWS).unlink()
            _close_locked(folder, fd)
            raise

    @staticmethod
    def _check_resume(folder: Path, saved: dict[str, Any], spec: dict[str, Any],
                      resume: bool | str) -> dict[int, SavedRow]:
        """The saved rows, if this sweep may go on from the checkpoint ``saved`` describes."""
        if not resume:
            raise SweepError(
                f"save={str(folder)!r} already holds a checkpoint ({len(read_rows(folder))} of "
                f"{saved['runs']} runs saved): pass resume=True to go on from it, "
                "or choose another directory"
            )
        different = [k for k in ("identity", "data") if saved.get(k) != spec[k]]
        if different:
            what = " and ".join("the data" if k == "data" else "the strategy, grid or settings"
                                for k in different)
            raise SweepError(
                f"cannot resume from save={str(folder)!r}: {what} differ from the saved sweep's "
                f"({saved['strategy']}, {saved['runs']} runs); use another directory"
            )
        rows = read_rows(folder)
        if "code" not in saved:
            _warn(f"checkpoint {str(folder)!r} was made by an older nbbacktest, which did not "
                  "record the strategy's code: its saved rows are kept without checking that "
                  "the code is the same")
        else:
            changes = code_changes(saved["code"], spec["code"])
            if changes and resume != "force":
                raise SweepError(
                    f"cannot resume from save={str(folder)!r}: {'; '.join(changes)} since the "
                    f"checkpoint was made, so its {len(rows)} saved rows come from other code. "
                    "Save in a new directory to run the new code on every point, or pass "
                    "resume='force' to keep the saved rows anyway (when the change cannot "
                    "alter results)"
                )
        return rows

    def append(self, rows: Iterable[SavedRow], describe: Any) -> None:
        """Save finished runs; ``describe(row)`` gives the params shown in errors.log.

        A write that fails (a full disk) raises a SweepError naming the directory;
        the runs are saved no further, as the next line would follow a cut one.
        """
        if self._failed is not None:
            raise self._failed
        lines = []
        errors = []
        for saved in rows:
            row, _, error, _, engine, host = saved
            lines.append(saved_line(saved))
            if error is not None:
                errors.append(
                    f"--- row {row} ({describe(row)}) on engine {engine}, host {host}, "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n{error[0]}: {error[1]}\n{error[2]}\n"
                )
        try:
            if lines and self._rows is not None:
                write_all(self._rows, ("\n".join(lines) + "\n").encode())
            if errors:
                if self._errors is None:
                    self._errors = os.open(self.folder / ERRORS,
                                           os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                write_all(self._errors, "".join(errors).encode())
        except OSError as error:
            self._failed = self._write_failed(error)
            raise self._failed from error

    def _write_failed(self, error: OSError) -> SweepError:
        if error.errno == errno.ENOSPC:
            reason = "the disk is full"
        elif error.errno == getattr(errno, "EDQUOT", None):  # not on Windows
            reason = "the disk quota is exceeded"
        else:
            reason = "a write failed"
        return SweepError(
            f"cannot save rows to the checkpoint save={str(self.folder)!r}: {reason} "
            f"({error.strerror or error}). The sweep stops; its finished rows are kept in "
            "memory (in its results), and the rows saved before stay in the directory: free "
            "some space, then sweep(..., resume=True) with the same save= runs the rest"
        )

    def write_card(self, card: dict[str, Any]) -> None:
        """(Re)write the run card, ``card.json``; a failed write is only a warning (the rows count)."""
        try:
            write_card(self.folder, card)
        except OSError as error:
            _warn(f"the run card of save={str(self.folder)!r} could not be written "
                  f"({error.strerror or error}); the rows are saved as before")

    def close(self) -> None:
        """Close the files and release the lock (each write already reached the OS)."""
        if self._errors is not None:
            with contextlib.suppress(OSError):
                os.close(self._errors)
        if self._rows is not None:
            _close_locked(self.folder, self._rows)
        self._rows = self._errors = None

    def __del__(self) -> None:
        # A sweep that failed to start after opening its checkpoint never closes it:
        # its lock goes with it (at the latest when the process ends).
        with contextlib.suppress(AttributeError, TypeError):  # at exit, os may be gone already
            self.close()


def _write_atomic(path: Path, payload: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        file.write(payload)
    os.replace(temporary, path)


def _write_spec(folder: Path, spec: dict[str, Any]) -> None:
    _write_atomic(folder / SPEC_JSON, json.dumps(spec, indent=2, default=str).encode())


def spec_bytes(spec: SweepSpec) -> bytes:
    """Pickle ``spec`` with classes from notebooks and scripts by value (cloudpickle)."""
    return pickling.dumps(spec, spec.plan.classes)


def load_spec(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The readable spec of the sweep saved in ``folder``.

    Raises
    ------
    SweepError
        When ``folder`` holds no checkpoint, or its ``spec.json`` is damaged or is
        not one nbbacktest wrote; the message names the directory and the fault.

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> _ = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10]},
    ...               save=folder, progress=False)
    >>> load_spec(folder)["runs"]
    2
    """
    folder = Path(folder)
    try:
        spec = json.loads((folder / SPEC_JSON).read_bytes())
    except FileNotFoundError:
        raise SweepError(f"{str(folder)!r} holds no checkpoint (no {SPEC_JSON}); "
                         "sweep(..., save=DIR) writes one") from None
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _damaged(folder, f"its {SPEC_JSON} cannot be read ({error})") from error
    if not isinstance(spec, dict):
        raise _damaged(folder, f"its {SPEC_JSON} holds a JSON {type(spec).__name__}, not a sweep's spec")
    missing = [key for key in _SPEC_KEYS if key not in spec]
    if missing:
        raise _damaged(folder, f"its {SPEC_JSON} has no {', '.join(map(repr, missing))}")
    if not isinstance(spec["format"], int) or spec["format"] > FORMAT:
        raise SweepError(
            f"the checkpoint {str(folder)!r} was written by a newer nbbacktest (format "
            f"{spec['format']!r}; this one reads up to {FORMAT}): upgrade nbbacktest to resume it"
        )
    return spec


def _unpickle(folder: Path, name: str) -> Any:
    try:
        with open(folder / name, "rb") as file:
            return pickle.load(file)
    except Exception as error:  # unpickling raises anything: EOFError, UnpicklingError, ImportError, ...
        raise _damaged(folder, f"its {name} cannot be loaded ({type(error).__name__}: {error})") from error


def load_state(folder: str | os.PathLike[str], trusted: bool = False) -> tuple[SweepSpec, Any]:
    """What :func:`nbbacktest.resume` needs: the saved sweep's spec and its data.

    A checkpoint holds code: nothing is unpickled before the signature of its pickled
    files is checked against this user's key, unless ``trusted`` (which then signs it).

    Parameters
    ----------
    folder : str or path
        A save directory.
    trusted : bool
        Load a checkpoint not signed by this user (received from someone else).

    Returns
    -------
    (SweepSpec, DataFrame or dict of DataFrame)

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> _ = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10]},
    ...               save=folder, progress=False)
    >>> spec, data = load_state(folder)
    >>> len(spec.plan), len(data) > 0
    (2, True)
    """
    folder = Path(folder)
    summary = load_spec(folder)
    for name in (SPEC_PICKLE, DATA_PICKLE):
        if not (folder / name).is_file():
            raise _damaged(folder, f"its {name} is missing")
    if not trusted:
        check_signature(folder, summary)
    state = _unpickle(folder, SPEC_PICKLE)
    if not isinstance(state, (SweepSpec, dict)):
        raise _damaged(folder, f"its {SPEC_PICKLE} holds a {type(state).__name__}, not a sweep's state")
    try:
        spec = SweepSpec.from_state(state)
    except (TypeError, ValueError) as error:
        raise _damaged(folder, f"its {SPEC_PICKLE} is not a sweep's state ({error})") from error
    data = _unpickle(folder, DATA_PICKLE)
    if trusted:  # the user vouched for it: later resumes need no flag
        signed = signature(folder)
        if signed is not None:
            _write_spec(folder, {**summary, "signature": signed})
    remember_loaded_code(spec.plan.classes, summary.get("code"))
    return spec, data

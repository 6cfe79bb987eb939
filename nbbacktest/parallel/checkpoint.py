"""Checkpoints: a sweep's save directory, written row by row as results arrive.

A directory holds

- ``spec.json``: what the sweep is (strategy, grid size, settings, data fingerprint,
  a digest of each strategy class's source, the signature of the pickled files), for
  people and for resuming; ``spec.pkl``: what :func:`nbbacktest.resume` needs to go
  on in a new process (the plan with its strategy classes by value, settings, metric);
- ``data.pkl``: the data, written once, so that ``resume(dir)`` needs nothing else;
- ``rows.jsonl``: one JSON line per finished run (done or failed), appended as rows
  arrive. A sweep holds a lock (``flock``) on it while it runs, so that a second
  sweep on the directory fails at once instead of corrupting it; the OS releases
  the lock when the sweep ends or its process dies. A line is written with a single ``write`` on a file opened for appending;
  a process killed mid-write leaves at most a last line without its newline, which
  :func:`read_rows` detects and skips (and the next writer cuts off). Files are not
  fsync'ed (that would cost more than the sweep on fast points): a killed process
  loses nothing, a machine that loses power may lose the last rows the OS held;
- ``errors.log``: each failed run's params, error and engine-side traceback, as text.

Floats survive the JSON round trip to the bit (``repr`` is exact), so a resumed sweep's
table equals an uninterrupted run's.

A checkpoint holds code: ``spec.pkl`` carries the strategy classes, and unpickling it
runs whatever its author put there. So :func:`load_state` unpickles only checkpoints
signed on this machine by this user: ``spec.json`` holds an HMAC-SHA256 of each
pickled file under a random per-user key, created on first use in a file only its owner can
read (``checkpoint_secret`` in ``$NBBACKTEST_DATA_DIR``, or else the user's data
directory: ``~/.local/share/nbbacktest`` on Linux), as Jupyter signs notebooks.
Any other checkpoint is refused unless the caller says it is trusted.

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
import hashlib
import hmac
import inspect
import json
import marshal
import os
import pickle
import re
import sys
import time
import types
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from nbbacktest.engine.data import _warn
from nbbacktest.errors import SweepError
from nbbacktest.parallel import pickling

try:
    import fcntl
except ImportError:  # Windows: no flock, no lock (see _open_locked)
    fcntl = None  # type: ignore[assignment]

SPEC_JSON, SPEC_PICKLE, DATA_PICKLE = "spec.json", "spec.pkl", "data.pkl"
ROWS, ERRORS = "rows.jsonl", "errors.log"
#: 2: spec.json records each strategy class's code digest; the pickled files are signed.
FORMAT = 2
#: Environment variable naming the directory of this user's key (for a test, or a
#: home directory that cannot be written).
DATA_DIR_ENV = "NBBACKTEST_DATA_DIR"
#: The key's file name in :func:`data_dir`.
SECRET = "checkpoint_secret"

#: One saved run: (row, stats or None, (type, message, traceback) or None, seconds, engine, host).
SavedRow = tuple[int, "dict[str, Any] | None", "tuple[str, str, str] | None", float, int, "str | None"]

# What a spec.json must hold to be one of ours, and a spec.pkl's state.
_SPEC_KEYS = ("format", "strategy", "runs", "identity", "data")
_STATE_KEYS = ("plan", "settings", "metric", "maximize", "stop_on_error", "warn_after")
# data.pkl can be gigabytes: its MAC is computed a block at a time.
_BLOCK = 1 << 20
# How long a reader waits for a key another process is creating at that moment.
_KEY_WAIT = 2.0
# flock's errors when another holds the lock.
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK}
# The save directories this process holds locks on (to say whose the lock is).
_LOCKED_HERE: set[Path] = set()
# Class attributes that are not code: moving a class or editing its docstring changes them.
_NOT_CODE = frozenset({"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                       "__firstlineno__", "__static_attributes__"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_HEAPTYPE = 1 << 9  # a class defined in Python (not a built-in type like object)
# The digest each class loaded from a checkpoint was saved with: a class unpickled
# from spec.pkl is that checkpoint's code, whatever its file holds now.
_LOADED_CODE: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------- rows
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


def _parse_row(line: bytes) -> SavedRow:
    """One line of rows.jsonl as a saved run; ValueError, KeyError or TypeError if it is none."""
    record = json.loads(line, object_hook=_decode)
    row, stats, error = record["row"], record["stats"], record["error"]
    if type(row) is not int or row < 0:
        raise ValueError(f"row {row!r} is not a row number")
    # A finished run has stats, a failed one an error: exactly one of them.
    if not (isinstance(stats, dict) and error is None
            or stats is None and isinstance(error, list) and len(error) == 3):
        raise ValueError("neither stats nor an error")
    return (row, stats, None if error is None else tuple(error), float(record["seconds"]),
            int(record["engine"]), record["host"])


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
                saved = _parse_row(line)
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


def _write(fd: int, payload: bytes) -> None:
    """Write all of ``payload``: ``os.write`` may write less (a disk that fills up midway)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------------- code
def _user_classes(classes: Iterable[type]) -> Iterator[type]:
    """``classes`` and their bases, except nbbacktest's and built-in types, once each."""
    seen: set[type] = set()
    for cls in classes:
        for klass in cls.__mro__:
            module = klass.__module__ or ""
            if (klass in seen or not klass.__flags__ & _HEAPTYPE
                    or module == "nbbacktest" or module.startswith("nbbacktest.")):
                continue
            seen.add(klass)
            yield klass


def _class_name(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _member_code(value: Any) -> bytes:
    """What a class attribute contributes to its class's digest when the class has no source."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return b"property(" + b",".join(_member_code(f) for f in (value.fget, value.fset, value.fdel)) + b")"
    if isinstance(value, types.FunctionType):
        defaults = _ADDRESS.sub("", repr((value.__defaults__, value.__kwdefaults__))).encode()
        try:
            # A notebook cell's methods have source (in linecache) where their class has none.
            return inspect.getsource(value).encode() + defaults
        except (OSError, TypeError):
            return marshal.dumps(value.__code__) + defaults
    # Addresses differ from one process (or cell run) to the next; the rest is the value.
    return _ADDRESS.sub("", repr(value)).encode()


def _digest(klass: type) -> str:
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        # No source (a class from a notebook cell, exec or ``python -c``): its members'.
        digest = hashlib.sha256()
        for name, value in sorted(vars(klass).items()):
            if name not in _NOT_CODE:
                digest.update(name.encode() + b"=" + _member_code(value) + b"\n")
        return "members:" + digest.hexdigest()
    return "source:" + hashlib.sha256(source.encode()).hexdigest()


def code_digests(classes: Iterable[type]) -> dict[str, str]:
    """A digest of the code of each class and of its bases outside nbbacktest.

    The digest is of the class's source (:func:`inspect.getsource`); a class with
    no source (from a notebook cell, ``exec`` or ``python -c``) gets one of its
    methods' source or code and its other attributes. A class loaded from a
    checkpoint keeps the digest it was saved with.

    Parameters
    ----------
    classes : iterable of classes

    Returns
    -------
    dict of str to str
        By qualified name (``module.QualName``).

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> code_digests([SmaCross])   # nbbacktest's own classes are not recorded
    {}
    """
    return {_class_name(klass): _LOADED_CODE.get(klass) or _digest(klass)
            for klass in _user_classes(classes)}


def _code_changes(saved: Any, current: dict[str, str]) -> list[str]:
    """What differs between the code digests of a checkpoint and of this sweep, in words."""
    saved = saved if isinstance(saved, dict) else {}
    changes = [f"the code of {name} changed" for name in current
               if name in saved and saved[name] != current[name]]
    changes += [f"{name} is new" for name in current if name not in saved]
    changes += [f"{name} is gone" for name in saved if name not in current]
    return changes


# ---------------------------------------------------------------------- signing
def data_dir() -> Path:
    """The directory of this user's nbbacktest files (the checkpoint key).

    ``$NBBACKTEST_DATA_DIR`` when set; otherwise the platform's per-user data
    directory: ``$XDG_DATA_HOME/nbbacktest`` or ``~/.local/share/nbbacktest`` on
    Linux, ``~/Library/Application Support/nbbacktest`` on macOS,
    ``%APPDATA%\\nbbacktest`` on Windows.

    Examples
    --------
    >>> data_dir().name in ("nbbacktest", os.path.basename(os.environ.get(DATA_DIR_ENV, "")))
    True
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "nbbacktest"


def secret_key() -> bytes:
    """This user's key for signing checkpoints; made on first use (mode 0600).

    The key lives in ``data_dir() / "checkpoint_secret"``. Deleting it makes a new
    one: checkpoints signed with the old one then need ``resume(dir, trusted=True)``.

    Examples
    --------
    >>> len(secret_key())
    32
    """
    path = data_dir() / SECRET
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: of two processes making it at once, one writes it, the other reads it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                _write(fd, os.urandom(32).hex().encode())
            finally:
                os.close(fd)
    deadline = time.monotonic() + _KEY_WAIT
    while True:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return bytes.fromhex(text)
        if time.monotonic() > deadline:
            raise SweepError(
                f"the checkpoint signing key {str(path)!r} is damaged (not 64 hex digits): "
                "delete it and a new one is made (checkpoints signed with the old one then "
                "need nbb.resume(dir, trusted=True))"
            )
        time.sleep(0.01)  # its maker is writing it


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while block := file.read(_BLOCK):
            yield block


def _mac(key: bytes, name: str, chunks: Iterable[bytes]) -> str:
    # The file's name is signed too: a checkpoint's spec.pkl cannot pass for its data.pkl.
    mac = hmac.new(key, name.encode() + b"\0", hashlib.sha256)
    for chunk in chunks:
        mac.update(chunk)
    return mac.hexdigest()


def _signature(folder: Path, payloads: dict[str, bytes] | None = None) -> dict[str, str] | None:
    """The signature of ``folder``'s pickled files (``payloads``: their bytes, when at hand)."""
    try:
        key = secret_key()
    except OSError as error:
        _warn(f"checkpoint {str(folder)!r} is not signed: this user's key cannot be made "
              f"({error}); set {DATA_DIR_ENV} to a writable directory, or resume it with "
              "nbb.resume(dir, trusted=True)")
        return None
    files = {name: _mac(key, name, [payloads[name]] if payloads else _chunks(folder / name))
             for name in (SPEC_PICKLE, DATA_PICKLE)}
    return {"algorithm": "hmac-sha256", **files}


def _refuse(folder: Path, why: str) -> SweepError:
    return SweepError(
        f"nbb.resume will not load the checkpoint {str(folder)!r}: {why}. A checkpoint holds "
        f"code (the strategy classes in {SPEC_PICKLE}) that loading it runs, so only those "
        "made by this user on this machine load without asking. If you trust where it came "
        f"from: nbb.resume({str(folder)!r}, trusted=True) (which then signs it as yours)"
    )


def _check_signature(folder: Path, spec: dict[str, Any]) -> None:
    """Raise unless ``folder``'s pickled files carry this user's signature (reads, never unpickles)."""
    signature = spec.get("signature")
    if signature is None:
        raise _refuse(folder, "it is not signed (made by another program, or by an older nbbacktest)")
    if not isinstance(signature, dict) or signature.get("algorithm") != "hmac-sha256":
        raise _refuse(folder, f"the signature in its {SPEC_JSON} is damaged")
    key = secret_key()
    for name in (SPEC_PICKLE, DATA_PICKLE):
        expected = signature.get(name)
        if not isinstance(expected, str) or not hmac.compare_digest(
                _mac(key, name, _chunks(folder / name)), expected):
            raise _refuse(folder, f"{name} does not match its signature (made by another user "
                                  "or on another machine, or changed since)")


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

    @classmethod
    def open(
        cls,
        save: Any,
        *,
        spec: dict[str, Any],
        state: dict[str, Any],
        data: Any,
        resume: bool | str,
    ) -> tuple[Checkpoint, dict[int, SavedRow]]:
        """Create ``save`` (or reopen it with ``resume``); returns it and the rows saved.

        ``spec`` identifies the sweep (compared on resume, with the code of its
        strategy classes); ``state`` is what ``nbbacktest.resume`` needs to rebuild it
        (pickled by value). ``resume="force"`` keeps the saved rows although the
        strategy's code changed, and records the new code.
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
            spec = {**spec, "format": FORMAT, "code": code_digests(state["plan"].classes)}
            saved_spec = load_spec(folder) if (folder / SPEC_JSON).exists() else None
            if saved_spec is None and (folder / ROWS).stat().st_size:
                raise _damaged(folder, f"it has saved rows ({ROWS}) but no {SPEC_JSON}")
            rows: dict[int, SavedRow] = {}
            write = saved_spec is None
            if saved_spec is not None:
                rows = cls._check_resume(folder, saved_spec, spec, resume)
                write = resume == "force" and saved_spec.get("code") != spec["code"]
            if write:
                payloads = {DATA_PICKLE: pickle.dumps(data, protocol=5), SPEC_PICKLE: state_bytes(state)}
                for name, payload in payloads.items():
                    _write_atomic(folder / name, payload)
                signature = _signature(folder, payloads)
                if signature is not None:
                    spec["signature"] = signature
                # Last: a directory with spec.json is a complete checkpoint.
                _write_spec(folder, spec)
            return cls(folder, spec, fd), rows
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
            changes = _code_changes(saved["code"], spec["code"])
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
        for row, stats, error, seconds, engine, host in rows:
            record = {"row": row, "stats": stats, "error": error, "seconds": seconds,
                      "engine": engine, "host": host}
            lines.append(json.dumps(record, default=_encode, separators=(",", ":")))
            if error is not None:
                errors.append(
                    f"--- row {row} ({describe(row)}) on engine {engine}, host {host}, "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n{error[0]}: {error[1]}\n{error[2]}\n"
                )
        try:
            if lines and self._rows is not None:
                _write(self._rows, ("\n".join(lines) + "\n").encode())
            if errors:
                if self._errors is None:
                    self._errors = os.open(self.folder / ERRORS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _write(self._errors, "".join(errors).encode())
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


def state_bytes(state: dict[str, Any]) -> bytes:
    """Pickle ``state`` with classes from notebooks and scripts by value (cloudpickle)."""
    return pickling.dumps(state, state["plan"].classes)


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


def load_state(folder: str | os.PathLike[str], trusted: bool = False) -> tuple[dict[str, Any], Any]:
    """What :func:`nbbacktest.resume` needs: the pickled state and the saved data.

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
    (dict, DataFrame or dict of DataFrame)

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> _ = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10]},
    ...               save=folder, progress=False)
    >>> state, data = load_state(folder)
    >>> len(state["plan"]), len(data) > 0
    (2, True)
    """
    from nbbacktest.parallel.grid import Plan

    folder = Path(folder)
    spec = load_spec(folder)
    for name in (SPEC_PICKLE, DATA_PICKLE):
        if not (folder / name).is_file():
            raise _damaged(folder, f"its {name} is missing")
    if not trusted:
        _check_signature(folder, spec)
    state = _unpickle(folder, SPEC_PICKLE)
    if not isinstance(state, dict):
        raise _damaged(folder, f"its {SPEC_PICKLE} holds a {type(state).__name__}, not a sweep's state")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing or not isinstance(state["plan"], Plan):
        what = f"no {', '.join(map(repr, missing))}" if missing else "a plan that is no Plan"
        raise _damaged(folder, f"its {SPEC_PICKLE} is not a sweep's state (it has {what})")
    data = _unpickle(folder, DATA_PICKLE)
    if trusted:  # the user vouched for it: later resumes need no flag
        signature = _signature(folder)
        if signature is not None:
            _write_spec(folder, {**spec, "signature": signature})
    recorded = spec.get("code")
    recorded = recorded if isinstance(recorded, dict) else {}
    for klass in _user_classes(state["plan"].classes):
        digest = recorded.get(_class_name(klass))
        if isinstance(digest, str):
            _LOADED_CODE[klass] = digest
    return state, data

"""What a checkpoint's files prove: the code they were made with, and who made them.

- Code digests: a digest of each strategy class's source (or, for a class with no
  source, of its members), recorded in ``spec.json`` and compared on resume, so
  that rows computed by old code are not mixed with new ones.
- Signatures: an HMAC-SHA256 of each pickled file under a random per-user key,
  created on first use in a file only its owner can read (``checkpoint_secret``
  in ``$NBBACKTEST_DATA_DIR``, or else the user's data directory:
  ``~/.local/share/nbbacktest`` on Linux), as Jupyter signs notebooks. A
  checkpoint holds code that unpickling runs, so only those this user signed
  load without asking.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import marshal
import os
import re
import sys
import time
import types
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nbbacktest.engine.data import _warn
from nbbacktest.errors import SweepError

#: Environment variable naming the directory of this user's key (for a test, or a
#: home directory that cannot be written).
DATA_DIR_ENV = "NBBACKTEST_DATA_DIR"
#: The key's file name in :func:`data_dir`.
SECRET = "checkpoint_secret"
#: The spec a checkpoint shows, and the files it signs: the pickled spec and data.
SPEC_JSON, SPEC_PICKLE, DATA_PICKLE = "spec.json", "spec.pkl", "data.pkl"

# data.pkl can be gigabytes: its MAC is computed a block at a time.
_BLOCK = 1 << 20
# How long a reader waits for a key another process is creating at that moment.
_KEY_WAIT = 2.0
# Class attributes that are not code: moving a class or editing its docstring changes them.
_NOT_CODE = frozenset({"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                       "__firstlineno__", "__static_attributes__"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_HEAPTYPE = 1 << 9  # a class defined in Python (not a built-in type like object)
# The digest each class loaded from a checkpoint was saved with: a class unpickled
# from spec.pkl is that checkpoint's code, whatever its file holds now.
_LOADED_CODE: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def write_all(fd: int, payload: bytes) -> None:
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


def class_sources(classes: Iterable[type]) -> dict[str, str | None]:
    """The source of each class and of its bases outside nbbacktest (those :func:`code_digests` covers).

    A class with no source of its own (from a notebook cell, ``exec`` or ``python -c``)
    gives its methods' sources where they have one, else None.

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> class_sources([SmaCross])   # nbbacktest's own classes are not recorded
    {}
    """
    return {_class_name(klass): _source(klass) for klass in _user_classes(classes)}


def _source(klass: type) -> str | None:
    try:
        return inspect.getsource(klass)
    except (OSError, TypeError):
        pass
    methods = []
    for name, value in vars(klass).items():
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(function, types.FunctionType) and name not in _NOT_CODE:
            try:
                methods.append(inspect.getsource(function))
            except (OSError, TypeError):
                continue
    return "".join(methods) or None


def code_changes(saved: Any, current: dict[str, str]) -> list[str]:
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
                write_all(fd, os.urandom(32).hex().encode())
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


def signature(folder: Path, payloads: dict[str, bytes] | None = None) -> dict[str, str] | None:
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


def check_signature(folder: Path, spec: dict[str, Any]) -> None:
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

def remember_loaded_code(classes: Iterable[type], recorded: Any) -> None:
    """Classes just unpickled from a checkpoint keep the digests it recorded for them."""
    recorded = recorded if isinstance(recorded, dict) else {}
    for klass in _user_classes(classes):
        digest = recorded.get(_class_name(klass))
        if isinstance(digest, str):
            _LOADED_CODE[klass] = digest

"""Indicators computed once per process per data: the memo behind ``Strategy.I``.

A sweep runs thousands of points on the same prepared data; most of them ask for
the same few moving averages. ``self.I(fn, *args, **kwargs)`` returns
``fn(*args, **kwargs)`` and remembers it, so every later run in this process (an
engine, or the notebook's own process) on the same data gets the stored value.

The key
    ``(data, function, arguments)``:

    - *data*: the :class:`~nbbacktest.engine.types.PreparedData` the run is on (its
      whole bars: the windows of ``trading_from`` share it). Prepared data is one
      symbol of one data set, built once per engine and read-only to strategies;
      each gets a serial number never reused, and its entries go when it dies. A
      plain ``nbb.backtest`` prepares the frame anew on every call, so a user's
      frame is never memoized across calls and an edited frame cannot return a
      stale value; a sweep's data lives as long as the engine holds it.
    - *function*: module and qualified name, and for Python functions also the
      code, the defaults, the closure's values and the globals the code reads
      (lambdas and closures made anew per run share entries when these are equal).
      A function of an imported module is keyed by its name and code.
    - *arguments*: numbers, strings, None and tuples, lists and dicts of them by
      value (with their type: ``20`` and ``20.0`` differ); a column of the data
      (``data["Close"]``, a Series or its numpy array) by which column it is, not
      by its values; the strategy's own frame ``data`` by identity of its columns;
      a value ``self.I`` returned by which entry it is; small numpy arrays (4 KiB
      at most) by their bytes; strategies (and any object with an
      ``__indicator_key__()`` method) by class, parameters and seed; functions as
      above.

    Anything else (a dict of arrays, a Series of other data, an open file) makes
    the call *unkeyable*: it is computed every time, without a warning, and
    counted in :func:`memo_info`'s ``uncached``.

Read-only values
    Stored arrays are read-only (``flags.writeable`` is False) and every call gets
    its own view (a shallow copy of a Series or DataFrame), so a strategy can
    neither corrupt the memo nor see another run's edits.

The budget
    256 MiB per process by default (:data:`DEFAULT_MEMO_MB`); the environment
    variable ``NBBACKTEST_INDICATOR_MEMO_MB`` sets it when the module is imported,
    :func:`set_indicator_memo` at any time; 0 turns the memo off. Past the budget
    the least recently used entries go; a value larger than the whole budget is
    not stored.

Examples
--------
>>> import nbbacktest as nbb
>>> def sma(values, n):
...     return values.rolling(n).mean()
>>> class Cross(nbb.Strategy):
...     fast, slow = 10, 30
...     def signals(self, data):
...         close = data["Close"]
...         return (self.I(sma, close, self.fast) > self.I(sma, close, self.slow)).astype(float)
>>> before = memo_info()
>>> _ = nbb.sweep(Cross, nbb.load_sample("daily"), grid={"fast": [5, 10], "slow": [20, 30]},
...               progress=False)
>>> after = memo_info()
>>> after.misses - before.misses, after.hits - before.hits   # 4 SMAs computed, 4 reused
(4, 4)
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import types
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from nbbacktest.engine.caches import IdentityCache
from nbbacktest.engine.readonly import owning_array, read_only_frame
from nbbacktest.errors import NbbacktestWarning

if TYPE_CHECKING:
    from nbbacktest.engine.types import PreparedData

__all__ = [
    "DEFAULT_MEMO_MB", "MEMO_ENV", "MemoInfo", "compute_indicator", "memo_info", "set_indicator_memo",
]

#: The memo's budget per process, in MiB: 256 holds about 1,600 indicators of
#: 20,000 bars, far more than a grid asks for, and is small next to an engine's data.
DEFAULT_MEMO_MB = 256.0
#: The environment variable that sets the budget (MiB) when nbbacktest is imported.
MEMO_ENV = "NBBACKTEST_INDICATOR_MEMO_MB"
#: Arrays that are not the data's own are keyed by their bytes up to this size.
_SMALL_ARRAY_BYTES = 4096
#: What an entry costs beyond its arrays (the key, the objects): counted so that
#: many scalar entries cannot grow without bound.
_ENTRY_OVERHEAD = 256


class MemoInfo(NamedTuple):
    """The memo's counters in this process (see :func:`memo_info`)."""

    hits: int
    misses: int
    #: calls computed without the memo: unkeyable arguments or values, or a run outside a backtest
    uncached: int
    entries: int
    nbytes: int
    budget: int
    evicted: int

    @property
    def hit_rate(self) -> float:
        """Hits over keyed calls (hits + misses); NaN before any."""
        looked = self.hits + self.misses
        return self.hits / looked if looked else math.nan


class _Unkeyable(Exception):
    """An argument the memo cannot key: the call is computed without it."""


class _Memo:
    """Least-recently-used store of indicator values under a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.by_scope: dict[int, set[Hashable]] = {}
        #: (data pointer, stride, length, dtype) of a stored array -> its entry's key
        self.arrays: dict[tuple, Hashable] = {}
        self.nbytes = 0
        self.hits = self.misses = self.uncached = self.evicted = 0
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self.lock:
            found = self.entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, scope: int, value: Any, size: int) -> None:
        with self.lock:
            if key in self.entries or size > self.budget:
                return
            self.entries[key] = (value, size)
            self.by_scope.setdefault(scope, set()).add(key)
            for array in _arrays_of(value):
                self.arrays[_pointer(array)] = key
            self.nbytes += size
            while self.nbytes > self.budget:
                self._drop(next(iter(self.entries)))
                self.evicted += 1

    def _drop(self, key: Hashable) -> None:
        value, size = self.entries.pop(key)
        self.nbytes -= size
        scope = self.by_scope.get(key[0])  # type: ignore[index]
        if scope is not None:
            scope.discard(key)
        for array in _arrays_of(value):
            if self.arrays.get(_pointer(array)) == key:
                del self.arrays[_pointer(array)]

    def drop_scope(self, scope: int) -> None:
        with self.lock:
            for key in self.by_scope.pop(scope, ()):
                if key in self.entries:
                    self._drop(key)

    def shrink(self, budget: int) -> None:
        with self.lock:
            self.budget = budget
            while self.entries and self.nbytes > budget:
                self._drop(next(iter(self.entries)))
                self.evicted += 1


def _budget_from_env() -> int:
    text = os.environ.get(MEMO_ENV)
    if text is None or not text.strip():
        return _to_bytes(DEFAULT_MEMO_MB)
    try:
        return _to_bytes(_check_mb(float(text), MEMO_ENV))
    except (TypeError, ValueError) as error:
        warnings.warn(f"{MEMO_ENV}={text!r} is not a size in MiB ({error}); the indicator memo keeps"
                      f" its default of {DEFAULT_MEMO_MB:g} MiB", NbbacktestWarning, stacklevel=2)
        return _to_bytes(DEFAULT_MEMO_MB)


def _check_mb(mb: float, name: str) -> float:
    if isinstance(mb, bool) or not isinstance(mb, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of MiB, got {type(mb).__name__} {mb!r}")
    if not math.isfinite(mb) or mb < 0:
        raise ValueError(f"{name} must be a finite number of MiB >= 0 (0 turns the memo off), got {mb!r}")
    return float(mb)


def _to_bytes(mb: float) -> int:
    return int(mb * (1 << 20))


_MEMO = _Memo(_budget_from_env())


def set_indicator_memo(mb: float) -> float:
    """Set this process's indicator memo budget to ``mb`` MiB; 0 turns it off. Returns the old one.

    The least recently used entries go at once when the memo holds more. Engines
    have their own memo each: run it there too (``cluster.view.apply_sync``) or set
    ``NBBACKTEST_INDICATOR_MEMO_MB`` in their environment.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> old = nbb.set_indicator_memo(64)
    >>> memo_info().budget == 64 << 20
    True
    >>> _ = nbb.set_indicator_memo(old)
    """
    mb = _check_mb(mb, "the indicator memo budget")
    old = _MEMO.budget / (1 << 20)
    _MEMO.shrink(_to_bytes(mb))
    return old


def memo_info() -> MemoInfo:
    """The memo's counters in this process: hits, misses, uncached calls, entries, bytes, budget.

    Examples
    --------
    >>> info = memo_info()
    >>> info.budget >= 0 and info.nbytes <= info.budget
    True
    """
    memo = _MEMO
    with memo.lock:
        return MemoInfo(memo.hits, memo.misses, memo.uncached, len(memo.entries), memo.nbytes,
                        memo.budget, memo.evicted)


# ------------------------------------------------------------------ the data
class _Scope:
    """One prepared data set as the memo sees it: a serial number, its columns by memory."""

    __slots__ = ("token", "index", "columns", "arrays")
    _serial = 0

    def __init__(self, prepared: PreparedData) -> None:
        _Scope._serial += 1
        self.token = _Scope._serial
        self.index = prepared.index
        self.columns: dict[tuple, Hashable] = {}
        self.arrays: list[np.ndarray] = []
        # The data's columns wherever a run may read them: the frame, the simulator's
        # arrays, and the read-only frame every later run's frame is a shallow copy of
        # (a copy of the columns when the frame is not one float block: a run that got
        # its frame before this one was made finds its columns unknown, and computes).
        for label, array in (("Open", prepared.open), ("High", prepared.high),
                             ("Low", prepared.low), ("Close", prepared.close)):
            self._add(label, array)
        for frame in (prepared.frame, prepared.run_frame()):
            if frame.columns.is_unique:
                for label in frame.columns:
                    self._add(label, frame[label].to_numpy())

    def _add(self, label: Hashable, array: Any) -> None:
        if isinstance(array, np.ndarray) and array.ndim == 1:
            self.columns[_pointer(array)] = label
            self.arrays.append(array)

    def holds(self, array: np.ndarray) -> bool:
        """Whether ``array`` may be memory of the data's own columns."""
        return any(np.may_share_memory(array, column) for column in self.arrays)


_SCOPES: weakref.WeakKeyDictionary[PreparedData, _Scope] = weakref.WeakKeyDictionary()
_SCOPES_LOCK = threading.Lock()


def _scope_of(prepared: PreparedData) -> _Scope:
    whole = prepared.trading_from(0)  # a window's whole data: the bars the strategy sees
    found = _SCOPES.get(whole)
    if found is None:
        with _SCOPES_LOCK:
            found = _SCOPES.get(whole)
            if found is None:
                found = _SCOPES[whole] = _Scope(whole)
                weakref.finalize(whole, _MEMO.drop_scope, found.token)
    return found


def _pointer(array: np.ndarray) -> tuple:
    return (array.__array_interface__["data"][0], array.strides, array.shape, array.dtype.str)


# ------------------------------------------------------------------- the key
def compute_indicator(prepared: PreparedData | None, fn: Callable[..., Any], args: tuple,
                      kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)``, from the memo of ``prepared``'s data when it was computed before.

    ``prepared`` is the data of the run asking (None outside a backtest: computed,
    not remembered). What ``Strategy.I`` calls; see the module's notes for the key.
    """
    memo = _MEMO
    if prepared is None or memo.budget <= 0:
        with memo.lock:
            memo.uncached += 1
        return fn(*args, **kwargs)
    scope = _scope_of(prepared)
    try:
        key = (scope.token, _function_key(fn, set()), _args_key(args, scope, memo),
               _args_key(tuple(kwargs.items()), scope, memo) if kwargs else ())
        hash(key)
    except (_Unkeyable, TypeError):
        with memo.lock:
            memo.uncached += 1
        return fn(*args, **kwargs)
    found = memo.get(key)
    if found is not None:
        return _fresh(found[0])
    value = fn(*args, **kwargs)
    stored = _read_only(value, scope)
    if stored is None:  # a value that cannot be shared safely: not remembered
        return value
    memo.put(key, scope.token, stored, _size_of(stored) + _ENTRY_OVERHEAD)
    return _fresh(stored)


_VALUE_TYPES = (type(None), bool, int, float, complex, str, bytes, np.generic, slice, range)


def _args_key(values: tuple, scope: _Scope, memo: _Memo) -> tuple:
    return tuple(_value_key(v, scope, memo) for v in values)


def _value_key(value: Any, scope: _Scope, memo: _Memo) -> Hashable:
    if isinstance(value, _VALUE_TYPES):
        return (type(value), value)
    if isinstance(value, pd.Series):
        if not value.index.is_(scope.index):
            raise _Unkeyable
        array = value.to_numpy()
        return ("series", _known_array(array, scope, memo), (type(value.name), value.name))
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            pointer = _pointer(value)
            known = scope.columns.get(pointer) if value.ndim == 1 else None
            if known is not None:
                return ("array", "column", known)
            found = memo.arrays.get(pointer)
            if found is not None:
                return ("array", "memo", found)
            if value.nbytes <= _SMALL_ARRAY_BYTES:
                return ("array", value.dtype.str, value.shape, value.tobytes())
        raise _Unkeyable
    if isinstance(value, pd.DataFrame):
        return ("frame", _frame_key(value, scope, memo))
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_value_key(v, scope, memo) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((_value_key(k, scope, memo), _value_key(v, scope, memo))
                            for k, v in value.items()))
    if isinstance(value, (frozenset, set)):
        return (type(value), frozenset(_value_key(v, scope, memo) for v in value))
    if callable(value) or isinstance(value, types.ModuleType):
        return _function_key(value, set())
    return _other_key(value)


def _known_array(array: np.ndarray, scope: _Scope, memo: _Memo) -> Hashable:
    pointer = _pointer(array)
    known = scope.columns.get(pointer)
    if known is not None:
        return ("column", known)
    found = memo.arrays.get(pointer)
    if found is not None:
        return ("memo", found)
    raise _Unkeyable


def _frame_key(frame: pd.DataFrame, scope: _Scope, memo: _Memo) -> Hashable:
    # The strategy's own frame, or any frame of the data's columns on its index.
    if not frame.index.is_(scope.index) or not frame.columns.is_unique:
        raise _Unkeyable
    return tuple((label, _known_array(frame[label].to_numpy(), scope, memo))
                 for label in frame.columns)


def _other_key(value: Any) -> Hashable:
    # An object that says what it is by value: a Strategy (class, params and seed).
    keyed = getattr(type(value), "__indicator_key__", None)
    if keyed is None:
        raise _Unkeyable
    return ("object", keyed(value))


# Functions of importable modules, by identity: their key is their name and code.
_NAMED = IdentityCache(kept=256)


def _function_key(fn: Any, busy: set[int]) -> Hashable:
    if isinstance(fn, types.ModuleType):
        return ("module", fn.__name__)
    if isinstance(fn, type):
        return ("class", fn)  # by identity: a class redefined in a notebook is another
    if isinstance(fn, np.ufunc):
        return ("ufunc", fn.__name__)
    if isinstance(fn, types.MethodType):
        return ("method", _function_key(fn.__func__, busy), _plain_key(fn.__self__, busy))
    if isinstance(fn, functools.partial):
        return ("partial", _function_key(fn.func, busy), _plain_key(fn.args, busy),
                _plain_key(tuple(sorted(fn.keywords.items())), busy))
    if isinstance(fn, types.FunctionType):
        named = _NAMED.get(fn, _named_key)
        if named is not None:
            return named
        if id(fn) in busy:  # a function that reaches itself
            return ("recursive", fn.__qualname__)
        busy.add(id(fn))
        try:
            return _code_key(fn, busy)
        finally:
            busy.discard(id(fn))
    named = _named_key(fn)
    if named is not None:
        return named
    raise _Unkeyable


def _named_key(fn: Any) -> Hashable | None:
    """``(module, qualname, code)`` when ``fn`` is what its module holds under that name."""
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or module_name == "__main__" or not isinstance(qualname, str):
        return None
    if getattr(module, "__file__", None) is None:
        return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        return None
    return ("named", module_name, qualname, getattr(fn, "__code__", None))


def _code_key(fn: types.FunctionType, busy: set[int]) -> Hashable:
    code = fn.__code__
    closure = tuple(_cell_key(cell, busy) for cell in fn.__closure__ or ())
    namespace = fn.__globals__
    referenced = tuple((name, _plain_key(namespace[name], busy))
                       for name in _global_names(code) if name in namespace)
    return ("function", fn.__module__, fn.__qualname__, code, _plain_key(fn.__defaults__, busy),
            _plain_key(tuple(sorted((fn.__kwdefaults__ or {}).items())), busy), closure, referenced)


def _cell_key(cell: Any, busy: set[int]) -> Hashable:
    try:
        contents = cell.cell_contents
    except ValueError:  # an empty cell
        return ("empty",)
    return _plain_key(contents, busy)


def _plain_key(value: Any, busy: set[int]) -> Hashable:
    """A closure's or a global's value: plain values, functions, modules, classes, strategies."""
    if isinstance(value, _VALUE_TYPES):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_plain_key(v, busy) for v in value))
    if isinstance(value, (frozenset, set)):
        return (type(value), frozenset(_plain_key(v, busy) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((_plain_key(k, busy), _plain_key(v, busy)) for k, v in value.items()))
    if isinstance(value, np.ndarray) and value.dtype != object and value.nbytes <= _SMALL_ARRAY_BYTES:
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (types.ModuleType, type, np.ufunc)) or callable(value):
        return _function_key(value, busy)
    return _other_key(value)


_GLOBAL_NAMES: dict[types.CodeType, tuple[str, ...]] = {}


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` and the code nested in it (comprehensions, lambdas) may read as globals."""
    found = _GLOBAL_NAMES.get(code)
    if found is None:
        names = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                names.update(_global_names(const))
        found = tuple(sorted(names))
        if len(_GLOBAL_NAMES) >= 1024:
            _GLOBAL_NAMES.clear()
        _GLOBAL_NAMES[code] = found
    return found


# ----------------------------------------------------------------- the values
def _read_only(value: Any, scope: _Scope) -> Any:
    """A read-only version of ``value`` to store (no copy), or None when it cannot be stored."""
    if isinstance(value, _VALUE_TYPES):
        return value
    if isinstance(value, np.ndarray):
        return None if value.dtype == object else _frozen(value, scope)
    if isinstance(value, pd.Series):
        array = value.to_numpy()
        if not isinstance(value.dtype, np.dtype) or array.dtype == object:
            return None
        return pd.Series(_frozen(array, scope), index=value.index, name=value.name, copy=False)
    if isinstance(value, pd.DataFrame):
        if not all(isinstance(d, np.dtype) and d.kind != "O" for d in value.dtypes):
            return None
        return read_only_frame(value)
    if isinstance(value, (tuple, list)):
        parts = [_read_only(v, scope) for v in value]
        if any(p is None and v is not None for p, v in zip(parts, value)):
            return None
        return tuple(parts) if isinstance(value, tuple) else _StoredList(parts)
    return None


def _frozen(array: np.ndarray, scope: _Scope) -> np.ndarray:
    """A read-only view of ``array``; the memory it views is made read-only too (so that
    no view of it can be made writable again), unless it is the data's own."""
    view = array.view()
    view.flags.writeable = False
    owner = owning_array(array)
    if owner.flags.writeable and not scope.holds(owner):
        owner.flags.writeable = False
    return view


class _StoredList(tuple):
    """A list value, stored as a tuple: each caller gets a list of its own."""


def _fresh(stored: Any) -> Any:
    """What one caller gets: its own view of a stored value (changing it changes nothing stored)."""
    if isinstance(stored, np.ndarray):
        return stored.view()
    if isinstance(stored, (pd.Series, pd.DataFrame)):
        return stored.copy(deep=False)
    if isinstance(stored, _StoredList):
        return [_fresh(v) for v in stored]
    if isinstance(stored, tuple):
        return tuple(_fresh(v) for v in stored)
    return stored


def _arrays_of(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, pd.Series):
        return [value.to_numpy()]
    if isinstance(value, tuple):
        return [a for v in value for a in _arrays_of(v)]
    return []


def _size_of(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, pd.Series):
        return int(value.to_numpy().nbytes)
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(index=False).sum())
    if isinstance(value, tuple):
        return sum(_size_of(v) for v in value)
    return 0

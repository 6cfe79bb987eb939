"""User code that travels: strategy classes pickled by value, with their source.

A strategy defined in a notebook cell, a script or a local module does not exist
on the engines, so its class travels by value (cloudpickle). Since cloudpickle
3.1 a class's code arrives under the file name ``<dynamic-code>``, and an engine's
traceback of a failing point shows neither the user's file nor its lines. The
pickler here keeps each code object's file name and ships that file's source
lines once per payload; unpickling restores both (the lines go into
:mod:`linecache`, as IPython does for a cell), so a traceback formatted on an
engine reads exactly like one formatted in the user's process.

Only code that travels by value passes through this: code of installed packages
is pickled by reference and read from the engine's own files.
"""

from __future__ import annotations

import contextlib
import linecache
import sys
import types
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: Modules never sent by value: ours and the interpreter's are installed on every engine.
_INSTALLED = ("nbbacktest", "__main__", "builtins")


@contextlib.contextmanager
def by_value(classes: Iterable[type]) -> Iterator[None]:
    """While inside, cloudpickle sends the code of these classes' modules by value.

    Classes from a test file or a local module (and their bases from such modules)
    would be pickled by reference and fail to import on the engines or in a later
    process (``__main__`` and notebook classes are pickled by value already).

    Examples
    --------
    >>> import cloudpickle
    >>> with by_value([int]):
    ...     payload = cloudpickle.dumps(int)
    """
    import cloudpickle

    registered = []
    # Base classes too: a strategy may derive from one in a local module.
    names = {base.__module__ for cls in classes for base in cls.__mro__}
    try:
        for name in sorted(names):
            module = sys.modules.get(name)
            if module is None or name.startswith(_INSTALLED):
                continue
            try:
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
            except ValueError:
                pass
        yield
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def dumps(value: Any, classes: Iterable[type] = ()) -> bytes:
    """cloudpickle ``value``, ``classes``' modules by value, code with its file and source.

    The payload loads with plain :func:`pickle.loads` wherever nbbacktest is
    installed; code objects in it keep their file names, and the source lines of
    those files are registered in :mod:`linecache` as they load.

    Examples
    --------
    >>> import pickle
    >>> f = lambda x: x + 1
    >>> g = pickle.loads(dumps(f))
    >>> g(1), g.__code__.co_filename == f.__code__.co_filename
    (2, True)
    """
    import io

    buffer = io.BytesIO()
    with by_value(classes):
        _SourcePickler(buffer).dump(value)
    return buffer.getvalue()


def _pickler_class() -> type:
    import cloudpickle

    return cloudpickle.Pickler


class _SourcePickler(_pickler_class()):  # type: ignore[misc]
    """cloudpickle's Pickler, but code keeps its file name and carries that file's lines."""

    def __init__(self, file: Any) -> None:
        # One tuple per file, so that pickle's memo stores each file's lines once.
        self._lines: dict[str, tuple[str, ...]] = {}
        # Before the base __init__: the C pickler reads dispatch_table there.
        base: Any = _pickler_class()
        self.dispatch_table = ChainMap({types.CodeType: self._reduce_code}, base.dispatch_table)
        super().__init__(file)

    def _reduce_code(self, code: types.CodeType) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        base: Any = _pickler_class()
        rebuild, arguments = base.dispatch_table[types.CodeType](code)
        filename = code.co_filename
        lines = self._lines.get(filename)
        if lines is None:
            lines = self._lines[filename] = tuple(linecache.getlines(filename))
        return restore_code, (rebuild, arguments, filename, lines)


def restore_code(rebuild: Callable[..., types.CodeType], arguments: tuple[Any, ...],
                 filename: str, lines: tuple[str, ...]) -> types.CodeType:
    """Rebuild a code object under its own file name, its file's lines in :mod:`linecache`.

    Called by :func:`pickle.loads` on a payload of :func:`dumps`. Lines already
    known for ``filename`` are replaced only by different ones (a newer version
    of a cell or file), and never for a file that this process reads from disk
    unchanged.

    Examples
    --------
    >>> import pickle, linecache
    >>> namespace = {}
    >>> exec(compile("def f():\\n    return 1\\n", "<cell-7>", "exec"), namespace)
    >>> linecache.cache["<cell-7>"] = (20, None, ["def f():\\n", "    return 1\\n"], "<cell-7>")
    >>> payload = dumps(namespace["f"])
    >>> del linecache.cache["<cell-7>"]
    >>> pickle.loads(payload).__code__.co_filename, linecache.getline("<cell-7>", 2)
    ('<cell-7>', '    return 1\\n')
    """
    code = rebuild(*arguments)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if lines and list(lines) != linecache.getlines(filename):
        # mtime None: linecache.checkcache never drops the entry, as for IPython's cells.
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    return code

"""``where`` strings: a filter over a sweep's parameters, written as a Python expression.

:func:`compile_where` checks the expression once, before the sweep runs, and
turns it into a function of the parameters (``"fast < slow"`` becomes
``lambda fast, slow: fast < slow``). It sees the parameters and a few builtins
only: a guard against accidents, not a sandbox (the user owns the kernel). The
magics' ``--where`` and the sweep widget's box are compiled here too, so that
their mistakes read the same.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import re
import textwrap
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from nbbacktest.errors import SweepError, UnknownParamError, did_you_mean

__all__ = ["WHERE_BUILTINS", "CompiledWhere", "callable_text", "compile_where", "unknown_where_name"]

#: The only builtins a ``where`` expression may call.
WHERE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("abs", "min", "max", "round", "len", "int", "float", "bool", "str")
}

# str.format reaches attributes through its replacement fields ("{0.__class__}"),
# which the AST check below cannot see: keep those two methods out too.
_FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map"})
# Private names, and the generator/frame/traceback attributes that lead to the
# caller's globals. A guard against accidents, not a sandbox: the user owns the kernel.
_FORBIDDEN_PREFIXES = ("_", "gi_", "cr_", "ag_", "f_", "tb_")
# Longest source line(s) searched for a lambda's own text: its parse is tried at each end.
_LAMBDA_SEARCH = 2_000
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class CompiledWhere:
    """A checked ``where`` expression; call it with a namespace of parameters.

    ``names`` are the parameters it takes, ``positional`` the expression as a
    function of them in that order (the sweep calls it with each point's tuple).
    """

    __slots__ = ("expression", "names", "positional")

    def __init__(
        self, expression: str, names: tuple[str, ...], positional: Callable[..., Any]
    ) -> None:
        self.expression = expression
        self.names = names
        # The expression as a function of the params in ``names`` order: the sweep
        # calls it with each point's tuple and builds no namespace.
        self.positional = positional

    def __call__(self, point: SimpleNamespace) -> bool:
        return bool(self.positional(*[getattr(point, name) for name in self.names]))

    def __repr__(self) -> str:
        return f"<where {self.expression!r}>"


def compile_where(expression: str, names: Iterable[str]) -> CompiledWhere:
    """Compile a ``where`` expression over parameter names into a point filter.

    The expression sees the parameters and the builtins in
    :data:`WHERE_BUILTINS` only (abs, min, max, round, len, int, float, bool,
    str): no other builtin, no import, no attribute whose name starts with an
    underscore, no ``str.format`` and no generator or frame attributes. This
    guards against accidents; it is not a sandbox. Every problem is reported
    here, before the sweep runs.

    Parameters
    ----------
    expression : str
        A Python expression, e.g. ``"fast < slow and slow - fast >= 10"``.
    names : iterable of str
        The parameter names the expression may use.

    Returns
    -------
    CompiledWhere
        Called with a namespace whose attributes are the parameters, returns a
        bool; its ``positional`` takes the parameters in ``names`` order.

    Raises
    ------
    SweepError
        A syntax error, a forbidden name or attribute.
    UnknownParamError
        A name that is neither a parameter nor an allowed builtin.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> keep = compile_where("fast < slow", ["fast", "slow"])
    >>> keep(SimpleNamespace(fast=5, slow=10)), keep(SimpleNamespace(fast=50, slow=10))
    (True, False)
    """
    if not isinstance(expression, str):
        raise TypeError(f"where must be a str expression, got {type(expression).__name__}")
    params = tuple(dict.fromkeys(names))
    text = expression.strip()
    if not text:
        raise SweepError("where is an empty expression: give e.g. 'fast < slow', or None")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        column = max((error.offset or 1) - 1, 0)
        raise SweepError(
            f"where={expression!r} is not a valid expression: {error.msg}\n"
            f"    {text}\n    {' ' * column}^"
        ) from None
    _check_where_tree(tree, expression, params)
    usable = [name for name in params if name.isidentifier() and not keyword.iskeyword(name)]
    arguments = ast.arguments(
        posonlyargs=[],
        args=[ast.arg(arg=name) for name in usable],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )
    # A lambda over the params (not eval with a locals dict): comprehensions in the
    # expression then see the params through closures.
    function = ast.Expression(body=ast.Lambda(args=arguments, body=tree.body))
    ast.fix_missing_locations(function)
    code = compile(function, "<where>", "eval")
    positional = eval(code, {"__builtins__": dict(WHERE_BUILTINS)})  # noqa: S307 - checked above
    return CompiledWhere(expression, tuple(usable), positional)


def _check_where_tree(tree: ast.Expression, expression: str, params: tuple[str, ...]) -> None:
    allowed = ", ".join(WHERE_BUILTINS)
    # Names the expression binds itself: comprehension targets, lambda arguments, :=.
    bound = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
            node.attr.startswith(_FORBIDDEN_PREFIXES) or node.attr in _FORBIDDEN_ATTRIBUTES
        ):
            raise SweepError(
                f"where={expression!r} may not use the attribute {node.attr!r}: it sees"
                f" only the parameters and {allowed}"
            )
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = node.id
            if name in params or name in bound or name in WHERE_BUILTINS:
                continue
            if name.startswith("_") or hasattr(builtins, name):
                raise SweepError(
                    f"where={expression!r} may not use {name!r}: it sees only the"
                    f" parameters and {allowed}"
                )
            raise UnknownParamError(unknown_where_name(name, params))


def unknown_where_name(name: str, names: Iterable[str]) -> str:
    """The error for a name in ``where`` that is not a parameter, with a did-you-mean hint.

    Examples
    --------
    >>> unknown_where_name("fsat", ["fast", "slow"])
    "where refers to unknown parameter 'fsat'. Did you mean: fast?"
    """
    known = list(names)
    message = f"where refers to unknown parameter {name!r}."
    hint = did_you_mean(name, known)
    if hint:
        return message + hint
    if known:
        return f"{message} The parameters are: {', '.join(known)}."
    return f"{message} The strategy declares no parameters."


def callable_text(value: Any) -> str:
    """A ``where`` (or any callable setting) as text, to record what a sweep ran.

    A str is itself; a compiled ``where`` its expression; a lambda its own text
    (cut out of its source line); a function its source; anything else (a class
    from ``exec``, a builtin, a callable object) its repr, memory address removed.

    Examples
    --------
    >>> callable_text("fast < slow")
    'fast < slow'
    >>> keep = lambda p: p.fast < p.slow
    >>> callable_text(keep)
    'lambda p: p.fast < p.slow'
    >>> callable_text(abs)
    '<built-in function abs>'
    """
    if isinstance(value, str):
        return value
    if isinstance(value, CompiledWhere):
        return value.expression
    try:
        source = textwrap.dedent(inspect.getsource(value)).strip()
    except (OSError, TypeError):  # no source: exec, python -c, a builtin, an object
        return _ADDRESS.sub("", repr(value))
    if getattr(value, "__name__", None) == "<lambda>":
        return _lambda_text(source, value.__code__) or source
    return source


def _lambda_text(source: str, code: Any) -> str | None:
    """The text of the lambda of ``code`` in ``source`` (the line(s) it was written on).

    Each lambda of the lines is cut out (the longest text from its ``lambda`` that
    parses as one); the one whose bytecode, else whose arguments, match ``code``
    wins, else the first.
    """
    found = []
    for start in (m.start() for m in re.finditer(r"\blambda\b", source[:_LAMBDA_SEARCH])):
        text = source[start:start + _LAMBDA_SEARCH]
        for end in range(len(text), 0, -1):
            try:
                tree = ast.parse(text[:end], mode="eval")
            except SyntaxError:
                continue
            if isinstance(tree.body, ast.Lambda):  # (a longer text may parse as a tuple)
                found.append(text[:end].strip())
                break
    for same in (lambda c: c.co_code == code.co_code,
                 lambda c: c.co_varnames[:c.co_argcount] == code.co_varnames[:code.co_argcount]):
        for text in found:
            compiled = compile(text, "<lambda>", "eval").co_consts
            if any(hasattr(c, "co_code") and same(c) for c in compiled):
                return text
    return found[0] if found else None

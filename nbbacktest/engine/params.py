"""Strategy parameters: declared as class attributes, checked on construction.

A parameter is either a plain class attribute whose value is a bool, int, float or
str (``stop = 0.0``), or a :class:`Param` that also carries a range, a step, a set of
choices and a doc string (``fast = Param(10, low=2, high=100)``). The parameter's
type is the type of its default.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from nbbacktest.errors import ParamError, UnknownParamError, did_you_mean

#: Types a plain class attribute may have to count as a parameter.
PARAM_TYPES: tuple[type, ...] = (bool, int, float, str)

_MISSING = object()


class Param:
    """A declared strategy parameter.

    Parameters
    ----------
    default : bool, int, float or str
        The default value; its type is the parameter's type.
    low, high : number, optional
        Inclusive bounds for numeric parameters.
    step : number, optional
        The natural step of the parameter, used to build sweep grids and sliders.
    choices : iterable, optional
        The only values allowed.
    doc : str
        One line shown in widgets and help.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast = nbb.Param(10, low=2, high=100, doc="fast SMA length")
    ...     slow = 30
    >>> SmaCross.params()["fast"].high
    100
    """

    __slots__ = ("default", "type", "low", "high", "step", "choices", "doc", "name")

    def __init__(
        self,
        default: Any,
        *,
        low: float | None = None,
        high: float | None = None,
        step: float | None = None,
        choices: Iterable[Any] | None = None,
        doc: str = "",
    ) -> None:
        if isinstance(default, Param):
            raise TypeError("Param(default=...) got another Param; pass its value instead")
        if not isinstance(default, PARAM_TYPES):
            raise TypeError(
                f"Param default must be a bool, int, float or str, not {type(default).__name__}"
            )
        self.type: type = type(default)
        self.default = default
        self.name = ""
        numeric = self.type in (int, float)
        for label, bound in (("low", low), ("high", high), ("step", step)):
            if bound is not None and (not numeric or not _is_real(bound)):
                raise TypeError(
                    f"Param {label}={bound!r} needs a numeric default and a numeric bound"
                )
        if low is not None and high is not None and low > high:
            raise ValueError(f"Param low={low!r} is above high={high!r}")
        if step is not None and step <= 0:
            raise ValueError(f"Param step={step!r} must be positive")
        self.low, self.high, self.step = low, high, step
        self.choices: tuple[Any, ...] | None = tuple(choices) if choices is not None else None
        if self.choices is not None and not self.choices:
            raise ValueError("Param choices must not be empty")
        self.doc = doc
        # A default outside its own range is a declaration bug: say so at class time.
        self.validate(default, "Param")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Class access gives the declaration; instances hold their value in __dict__.
        if instance is None:
            return self
        return instance.__dict__.get(self.name, self.default)

    def __repr__(self) -> str:
        extras = [
            f"{k}={getattr(self, k)!r}"
            for k in ("low", "high", "step", "choices")
            if getattr(self, k) is not None
        ]
        if self.doc:
            extras.append(f"doc={self.doc!r}")
        return f"Param({', '.join([repr(self.default), *extras])})"

    def validate(self, value: Any, owner: str) -> Any:
        """Return ``value`` converted to the parameter's type, or raise ParamError."""
        label = f"{owner} parameter {self.name!r}" if self.name else owner
        value = _coerce(value, self.type, label)
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{label} must be one of {list(self.choices)!r}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ParamError(f"{label} must be >= {self.low!r}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ParamError(f"{label} must be <= {self.high!r}, got {value!r}")
        return value


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _coerce(value: Any, kind: type, label: str) -> Any:
    """Convert ``value`` to ``kind`` when that loses nothing (numpy scalars, 10.0 -> 10)."""
    if kind is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
    elif kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if _is_real(value) and float(value).is_integer():
            return int(value)
    elif kind is float:
        if _is_real(value):
            result = float(value)
            if result != result:
                raise ParamError(f"{label} must be a number, got NaN")
            return result
    elif isinstance(value, kind):
        return value
    raise ParamError(f"{label} must be {kind.__name__}, got {type(value).__name__} {value!r}")


def collect_params(cls: type, namespace_owner: type) -> dict[str, Param]:
    """Gather the Params a Strategy subclass declares, base classes first.

    Plain class attributes of a parameter type become Params; a Param keeps its
    position in the class body, so positional construction follows declaration order.
    """
    params: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        if not issubclass(klass, namespace_owner) or klass is namespace_owner:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Param):
                params[name] = value
            elif isinstance(value, PARAM_TYPES) and not callable(value):
                declared = Param(value)
                declared.name = name
                params[name] = declared
            elif name in params:
                # A subclass overrode a parameter with a method or property.
                del params[name]
    return params


def bind_params(
    owner: str, declared: Mapping[str, Param], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Match positional and keyword arguments to declared params and validate them."""
    names = list(declared)
    if len(args) > len(names):
        raise UnknownParamError(
            f"{owner} takes {len(names)} positional parameter(s) ({', '.join(names) or 'none'})"
            f" but {len(args)} were given"
        )
    values = {name: declared[name].default for name in names}
    given = dict(zip(names, args))
    for name, value in kwargs.items():
        if name in given:
            raise UnknownParamError(f"{owner} got parameter {name!r} twice")
        given[name] = value
    for name, value in given.items():
        if name not in declared:
            raise UnknownParamError(unknown_param_message(owner, name, names))
        values[name] = declared[name].validate(value, owner)
    return values


def unknown_param_message(owner: str, name: str, known: Iterable[str]) -> str:
    """Message for an unknown parameter, with a did-you-mean hint."""
    known = list(known)
    message = f"Strategy {owner!r} has no parameter {name!r}."
    hint = did_you_mean(name, known)
    if hint:
        message += hint
    elif known:
        message += f" Its parameters are: {', '.join(known)}."
    else:
        message += " It declares no parameters."
    return message

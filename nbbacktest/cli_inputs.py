"""What ``nbbacktest run`` reads: its ``--config`` file, the strategy ``FILE.py:CLASS`` and the data.

Each fault is a :class:`CommandError`: one line (a module that fails to import
adds its shortened traceback), exit status 2.

Examples
--------
>>> load_strategy("nbbacktest.engine.examples:SmaCross").__name__
'SmaCross'
>>> sorted(load_data("sample:universe", max_symbols=2))
['AAA', 'BBB']
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from nbbacktest.engine import Strategy, is_universe, load_ohlcv, load_sample
from nbbacktest.engine.samples import SAMPLE_NAMES as SAMPLES
from nbbacktest.errors import NbbacktestError, did_you_mean

__all__ = ["DATA_SUFFIXES", "CommandError", "load_data", "load_strategy", "parse_run", "read_config"]

#: The data files a folder universe is made of (one per symbol, the file name's stem).
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
#: How many frames of a failing strategy module's traceback are shown.
TRACEBACK_FRAMES = 3


class CommandError(NbbacktestError):
    """Bad arguments or input of a command: one line, exit status 2."""



# -------------------------------------------------------------------- config
def read_config(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The options of a TOML or YAML config file, as command-line words.

    Keys are the long options without their dashes (``max_symbols`` or
    ``max-symbols``), plus ``strategy`` and ``data``. ``grid`` and ``set`` take a
    table ``{name: spec}`` or a list of ``"name=spec"``; flags take true or false.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sweep.toml")
    >>> _ = Path(path).write_text('metric = "sortino"\\n[grid]\\nfast = "5:20:5"\\n')
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--metric"); _ = parser.add_argument("--grid", nargs="+")
    >>> read_config(path, parser)
    ['--metric', 'sortino', '--grid', 'fast=5:20:5']
    """
    options = _read_config_file(path)
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    words: list[str] = []
    positionals: dict[str, str] = {}
    for key, value in options.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise CommandError(f"--config {path}: unknown key {key!r}.{did_you_mean(dest, actions)}"
                               f" Keys: {', '.join(sorted(actions))}")
        action = actions[dest]
        if not action.option_strings:
            positionals[dest] = str(value)
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise CommandError(f"--config {path}: {key} must be true or false, got {value!r}")
            words += [flag] if value else []
        elif dest in ("grid", "set"):
            items = value.items() if isinstance(value, Mapping) else None
            pairs = ([f"{name}={_config_text(spec)}" for name, spec in items] if items is not None
                     else [str(v) for v in value] if isinstance(value, list) else [str(value)])
            words += [flag, *pairs]
        else:
            words += [flag, _config_text(value)]
    # Positionals first, in the parser's order: argparse reads them by position.
    return [positionals[d] for d in ("strategy", "data") if d in positionals] + words


def _config_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CommandError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            loaded: Any = tomllib.loads(raw.decode())
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise CommandError(f"--config {path}: reading YAML needs PyYAML"
                                   " (pip install pyyaml), or write the config as TOML") from None
            loaded = yaml.safe_load(raw) or {}
        else:
            raise CommandError(f"--config {path}: give a .toml, .yaml or .yml file")
    except CommandError:
        raise
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CommandError(f"--config {path}: cannot parse it ({first})") from None
    if not isinstance(loaded, dict):
        raise CommandError(f"--config {path}: it must hold a table of options, not a"
                           f" {type(loaded).__name__}")
    return loaded


def parse_run(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``run``'s words over a ``--config`` file's options: what the command line gives wins.

    A ``--grid`` (or ``--set``) on the command line replaces the config's whole grid.
    """
    given = parser.parse_args(argv)
    if given.config is None:
        return given
    config = parser.parse_args(read_config(given.config, parser))
    for name in ("grid", "set"):
        if getattr(given, name):
            setattr(config, name, [])
    positionals = {name: getattr(given, name) or getattr(config, name) for name in ("strategy", "data")}
    # Parsed into the config's namespace: options the command line leaves out keep its values.
    merged = parser.parse_args(argv, namespace=config)
    for name, value in positionals.items():  # an absent optional positional is reset to None
        setattr(merged, name, value)
    return merged


# ------------------------------------------------------------- strategy, data
def load_strategy(text: str) -> type[Strategy]:
    """The Strategy subclass ``FILE.py:CLASS`` or ``MODULE:CLASS`` names.

    A file is imported as a module named after it (its folder first on the
    path, so that it can import its neighbours); its classes travel to the
    engines by value.

    Raises
    ------
    CommandError
        No ``:``, no such file or module, a module that fails to import (its
        traceback, shortened), no such class, or not a Strategy subclass.

    Examples
    --------
    >>> load_strategy("nbbacktest.engine.examples:Smacross")
    Traceback (most recent call last):
    ...
    nbbacktest.cli_inputs.CommandError: STRATEGY ...: ... has no class 'Smacross'. Did you mean: SmaCross?
    """
    where, colon, name = text.rpartition(":")
    if not colon or not where or not name:
        raise CommandError(f"STRATEGY {text!r} must be FILE.py:CLASS or MODULE:CLASS,"
                           " e.g. strategies.py:SmaCross")
    is_file = where.endswith(".py") or os.sep in where
    module = _import_file(where, text) if is_file else _import_module(where, text)
    value = getattr(module, name, None)
    found = sorted(n for n, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy
                   and not n.startswith("_"))
    if value is None:
        hint = did_you_mean(name, found)
        listed = (f" Its Strategy subclasses: {', '.join(found)}." if found
                  else " It defines no Strategy subclass.")
        raise CommandError(f"STRATEGY {text}: {where} has no class {name!r}.{hint or listed}")
    if not (isinstance(value, type) and issubclass(value, Strategy)) or value is Strategy:
        raise CommandError(f"STRATEGY {text}: {name} is a {type(value).__name__}, not a Strategy subclass")
    return value


def _import_file(path: str, text: str) -> ModuleType:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CommandError(f"STRATEGY {text}: no file {path!r}")
    name = file.stem if file.stem.isidentifier() else "strategies"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # inspect.getsource and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        raise CommandError(f"STRATEGY {text}: importing {path} failed:\n"
                           + _short_traceback(error, str(file.resolve()))) from None
    return module


def _import_module(name: str, text: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            raise CommandError(f"STRATEGY {text}: no module {name!r} (give FILE.py:CLASS for a"
                               " file)") from None
        raise CommandError(f"STRATEGY {text}: importing {name} failed:\n"
                           + _short_traceback(error, None)) from None
    except Exception as error:
        raise CommandError(f"STRATEGY {text}: importing {name} failed:\n"
                           + _short_traceback(error, None)) from None


def _short_traceback(error: BaseException, file: str | None) -> str:
    """The last frames of ``error``'s traceback (those in ``file`` when given), and the error."""
    frames = traceback.extract_tb(error.__traceback__)
    if file is not None:
        frames = traceback.StackSummary.from_list([f for f in frames if f.filename == file]) or frames
    shown = traceback.StackSummary.from_list(list(frames)[-TRACEBACK_FRAMES:])
    lines = "".join(shown.format()) + "".join(traceback.format_exception_only(type(error), error))
    return lines.rstrip()


def load_data(text: str, *, max_symbols: int | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """The data DATA names: a file, a folder of one file per symbol, or ``sample:NAME``.

    ``max_symbols`` keeps the first N symbols of a universe (by name), read only those.

    Examples
    --------
    >>> sorted(load_data("sample:universe", max_symbols=2))
    ['AAA', 'BBB']
    """
    if text.startswith("sample:"):
        name = text.partition(":")[2]
        if name not in SAMPLES:
            raise CommandError(f"DATA {text!r}: no sample {name!r}.{did_you_mean(name, SAMPLES)}"
                               f" Samples: {', '.join(SAMPLES)}")
        data: Any = load_sample(name)
        if max_symbols is not None:
            if not is_universe(data):
                raise CommandError(f"--max-symbols applies to a universe, but DATA {text} is one frame")
            data = {symbol: data[symbol] for symbol in list(data)[:max_symbols]}
        return data
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(DATA_SUFFIXES))
        if not files:
            raise CommandError(f"DATA {text!r} is a folder with no {', '.join(DATA_SUFFIXES)} file:"
                               " put one file of bars per symbol there")
        by_symbol = {_symbol_of(f): f for f in files}
        if len(by_symbol) < len(files):
            raise CommandError(f"DATA {text!r} has two files for one symbol: keep one of each")
        chosen = dict(list(by_symbol.items())[:max_symbols] if max_symbols else by_symbol.items())
        with _data_errors(text):
            return load_ohlcv(chosen)
    if not path.exists():
        raise CommandError(f"DATA {text!r}: no such file or folder")
    if max_symbols is not None:
        raise CommandError(f"--max-symbols applies to a universe (a folder of files), but DATA {text}"
                           " is one file")
    with _data_errors(text):
        return load_ohlcv(path)


def _symbol_of(file: Path) -> str:
    name = file.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return file.stem


@contextlib.contextmanager
def _data_errors(text: str) -> Iterator[None]:
    try:
        yield
    except (NbbacktestError, ValueError, OSError) as error:
        raise CommandError(f"DATA {text}: {error}") from None

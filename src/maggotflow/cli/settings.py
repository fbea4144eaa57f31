"""Command-line options derived from a settings dataclass (`PretrainConfig`, `TrainConfig`,
`ForestConfig`): the one place where a settings field becomes an option.

One option per field, named as the field (`lr_stage1` -> `--lr-stage1`), so a setting is
the same word in the workflow config, on the command line and in Python. Its help is the
comment beside the field in the dataclass (`steps: int = 1000  # optimisation steps`) with
the dataclass's default, and an option that is not given is not passed on: the dataclass
default applies (the dataclass is the one home of a setting's name, default and meaning).
Values:

- numbers and words as usual; a field that may be None takes `none`;
- a tuple field takes comma-separated values (`--layers 64,32`; empty or `none` = no value);
- a boolean field is a switch: `--name` when its default is false, `--no-name` when true.

A bad value for the type is an argparse usage error; a value the dataclass refuses raises
its ValueError (`maggotflow.cli.main` reports it, exit 2).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from typing import Any

NONE_WORDS = ("none", "null")


def add_settings_options(parser: argparse.ArgumentParser, settings: type) -> None:
    """Add one option per field of the dataclass `settings`, its comment as the help."""
    defaults = settings()
    hints = typing.get_type_hints(settings)
    comments = _field_comments(settings)
    for field in dataclasses.fields(settings):
        option = field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        text = comments[field.name].replace("%", "%%")
        if hints[field.name] is bool:
            parser.add_argument(f"--no-{option}" if default else f"--{option}", dest=field.name,
                                action="store_false" if default else "store_true", default=argparse.SUPPRESS,
                                help=f"{text} (default {'on' if default else 'off'})")
        else:
            parser.add_argument(f"--{option}", dest=field.name, type=_value_parser(hints[field.name]),
                                default=argparse.SUPPRESS, metavar=field.name.upper(),
                                help=f"{text} (default {_shown(default)})")


def _field_comments(settings: type) -> dict[str, str]:
    """The comment beside each field in the dataclass's source; ValueError for a field without one."""
    source = textwrap.dedent(inspect.getsource(settings))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    lines = {node.target.id: node.lineno for node in body
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    missing = [f.name for f in dataclasses.fields(settings) if lines.get(f.name) not in comments]
    if missing:
        raise ValueError(f"{settings.__name__}: no comment beside the fields {missing} (their --help)")
    return {name: comments[line] for name, line in lines.items()}


def settings_from_args(settings: type, args: argparse.Namespace) -> Any:
    """The `settings` dataclass of the options given; the others keep the dataclass defaults."""
    return settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)})


def _value_parser(hint: Any) -> Callable[[str], Any]:
    """str -> value for a field's type: int, float, str, tuple[T, ...], and `X | None` of those."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
    if type(None) in members:
        inner = _value_parser(next(m for m in members if m is not type(None)))
        return lambda text: None if text.strip().lower() in NONE_WORDS else inner(text)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]

        def values(text: str) -> tuple:
            words = [w for w in text.replace(" ", "").split(",") if w]
            if not words or (len(words) == 1 and words[0].lower() in NONE_WORDS):
                return ()
            try:
                return tuple(item(w) for w in words)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") \
                    from None

        return values
    if hint in (int, float, str):
        return hint
    raise TypeError(f"no command-line form for a setting of type {hint}")


def _shown(value: Any) -> str:
    """A default as the command line writes it."""
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)

"""Command-line options derived from a settings dataclass (`PretrainConfig`, `TrainConfig`,
`ForestConfig`): the one place where a settings field becomes an option.

One option per field, named as the field (`lr_stage1` -> `--lr-stage1`), so a setting is
the same word in the workflow config, on the command line and in Python. The help shows the
dataclass's default, and an option that is not given is not passed on: the dataclass
default applies (it is the one source of defaults). Values:

- numbers and words as usual; a field that may be None takes `none`;
- a tuple field takes comma-separated values (`--layers 64,32`; empty or `none` = no value);
- a boolean field is a switch: `--name` when its default is false, `--no-name` when true.

A bad value for the type is an argparse usage error; a value the dataclass refuses raises
its ValueError (`maggotflow.cli.main` reports it, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable

NONE_WORDS = ("none", "null")


def add_settings_options(parser: argparse.ArgumentParser, settings: type, help: dict[str, str]) -> None:
    """Add one option per field of the dataclass `settings`; `help` has a text for every field."""
    defaults = settings()
    hints = typing.get_type_hints(settings)
    missing = [f.name for f in dataclasses.fields(settings) if f.name not in help]
    if missing:
        raise ValueError(f"no help text for {settings.__name__} fields {missing}")
    for field in dataclasses.fields(settings):
        option = field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        text = help[field.name].replace("%", "%%")
        if hints[field.name] is bool:
            parser.add_argument(f"--no-{option}" if default else f"--{option}", dest=field.name,
                                action="store_false" if default else "store_true", default=argparse.SUPPRESS,
                                help=text)
        else:
            parser.add_argument(f"--{option}", dest=field.name, type=_value_parser(hints[field.name]),
                                default=argparse.SUPPRESS, metavar=field.name.upper(),
                                help=f"{text} (default {_shown(default)})")


def settings_from_args(settings: type, args: argparse.Namespace, **given: Any):
    """The `settings` dataclass of the options given (plus `given`); the others keep their defaults."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)}
    return settings(**{**values, **given})


def _value_parser(hint: Any) -> Callable[[str], Any]:
    """str -> value for a field's type: int, float, str, tuple[T, ...], and `X | None` of those."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else ()
    if type(None) in members:
        inner = _value_parser(next(m for m in members if m is not type(None)))
        return lambda text: None if text.strip().lower() in NONE_WORDS else inner(text)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]

        def values(text: str) -> tuple:
            words = [w for w in text.replace(" ", "").split(",") if w]
            if [w.lower() for w in words] in ([], ["none"], ["null"]):
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

"""Command-line flags in one style: kebab-case, each with its help text.

Every `openr` command spells its flags `--like-this`. A training config's fields
become flags through `add_config_flags`, so a knob's help text is written once,
on its field. A renamed flag keeps its old spelling working for those who
already type it, hidden from --help and saying on stderr which flag to use.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import sys
import types
import typing
from typing import Any, Callable, Collection, Mapping, Sequence


def kebab_flag(name: str) -> str:
    """The flag of a field: `learning_rate` -> `--learning-rate`."""
    return "--" + name.replace("_", "-")


class _OldSpelling(argparse.Action):
    """A renamed flag's old spelling: it parses into the new flag's destination,
    is hidden from --help, and names the flag to use instead."""

    def __init__(self, option_strings: list[str], dest: str, new_flag: str, **kwargs: Any):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        # A DeprecationWarning is hidden by default; whoever typed the flag should see this.
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_flag(parser: argparse.ArgumentParser, flag: str, *, old: Sequence[str] = (),
             **kwargs: Any) -> argparse.Action:
    """`parser.add_argument(flag, **kwargs)`, plus each `old` spelling of the same
    flag, still accepted but hidden and warned about. For an on/off flag
    (`argparse.BooleanOptionalAction`) the old `--no-` form is kept too."""
    action = parser.add_argument(flag, **kwargs)
    for spelling in old:
        if isinstance(action, argparse.BooleanOptionalAction):
            for prefix, value in (("--", True), ("--no-", False)):
                parser.add_argument(prefix + spelling.removeprefix("--"), dest=action.dest, action=_OldSpelling,
                                    new_flag=prefix + flag.removeprefix("--"), nargs=0, const=value)
        else:
            parser.add_argument(spelling, dest=action.dest, action=_OldSpelling, new_flag=flag,
                                type=action.type, choices=action.choices, nargs=action.nargs, const=action.const)
    return action


def positive_int(text: str) -> int:
    """An integer flag that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def step_separator(value: str) -> str:
    """A `--step-separator` value with its backslash escapes read ('\\n' is a
    newline), so a shell user can type the newlines a separator is made of."""
    # Non-Latin-1 characters go in as escapes themselves, so they come out whole.
    text = codecs.decode(value.encode("latin-1", "backslashreplace"), "unicode_escape")
    if not text:
        raise argparse.ArgumentTypeError("the step separator cannot be empty")
    return text


def _flag_type(annotation: Any) -> type:
    """The one type a field's values parse to (`str | None` -> `str`)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (kind,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return kind
    return annotation


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, *,
                     choices: Mapping[str, Sequence[str]] | None = None, exclude: Collection[str] = (),
                     keep_defaults: bool = True, parsers: Mapping[str, Callable[[str], Any]] | None = None) -> None:
    """A `--field-name` flag for each field of the dataclass `config_class` (but
    those in `exclude`), with the field's `metadata["help"]`, its type, its
    default, `choices[name]` and `parsers[name]` (what reads the value, else the
    field's type) where given; a bool field is an on/off pair (`--x` / `--no-x`).
    The old `--field_name` spelling still parses.
    `keep_defaults=False` leaves a flag that is not given as None, for commands
    that build the config from the flags given only."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in exclude:
            continue
        kind = _flag_type(hints[f.name])
        options: dict[str, Any] = {"default": f.default if keep_defaults else None, "help": f.metadata["help"]}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=(parsers or {}).get(f.name, kind), choices=(choices or {}).get(f.name))
        add_flag(parser, kebab_flag(f.name), old=[f"--{f.name}"] if "_" in f.name else [], **options)

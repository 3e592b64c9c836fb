"""Command-line flags from config dataclasses: every field is a flag, its help is the field's ``help`` metadata.

One identical copy in pretrain/ and finetune/ (checked by tests/test_layout.py; canonical here).

    add_flags(parser.add_argument_group("training"), TrainConfig, defaults=PRESET)   # --help shows PRESET's values
    cfg = TrainConfig(**{**PRESET, **typed_flags(args, TrainConfig)})

Flags default to None, so ``typed_flags`` tells what the user typed from what the preset fills in; ``--help`` prints the
value that will be used (the preset's, else the field's own).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _kind(cls, f: dataclasses.Field):
    """(python type, nargs) of a field: int / float / str / bool, optionally `| None`, or `tuple[X, ...]`."""
    hint = typing.get_type_hints(cls).get(f.name, str)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        return args[0], "+"
    if args:  # X | None
        hint = args[0]
    return hint if hint in (int, float, str, bool) else str, None


def add_flags(group, cls, defaults: dict | None = None) -> None:
    """Add one flag per field of dataclass ``cls`` to ``group`` (a parser or an argument group)."""
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flag") is False:
            continue
        if f.name in defaults:
            value = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        text = f.metadata.get("help", "")
        help_ = f"{text} (default: {value})" if text else f"default: {value}"
        kind, nargs = _kind(cls, f)
        if kind is bool:
            group.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None,
                               help=help_.replace("%", "%%"))
        else:
            group.add_argument(f"--{f.name}", type=kind, nargs=nargs, default=None, metavar=f.name.upper(),
                               help=help_.replace("%", "%%"))


def typed_flags(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` the user set on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
            if k in names and v is not None}


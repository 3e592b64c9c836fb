"""Command-line flags from config dataclasses: every field is a flag, its help is the field's ``help`` metadata.
One identical copy in pretrain/ and finetune/, canonical here.

    add_flags(parser.add_argument_group("training"), TrainConfig, defaults=PRESET)   # --help shows PRESET's values
    cfg = TrainConfig(**{**PRESET, **typed_flags(args, TrainConfig)})

Flags default to None, so ``typed_flags`` tells what the user typed from what the preset fills in.
"""
import argparse
import dataclasses
import typing


def add_flags(group, cls, defaults: dict | None = None) -> None:
    """One flag per field (int, float, str or bool, optionally ``| None``) of dataclass ``cls`` on ``group`` (a parser
    or an argument group); --help shows ``defaults[field]``, else the field's default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = (typing.get_args(hints[f.name]) or [hints[f.name]])[0]  # int | None -> int
        value = (defaults or {}).get(f.name, f.default)
        help_ = f"{f.metadata.get('help', '')} (default: {value})".strip().replace("%", "%%")
        if kind is bool:
            group.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(f"--{f.name}", type=kind, default=None, metavar=f.name.upper(), help=help_)


def typed_flags(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}

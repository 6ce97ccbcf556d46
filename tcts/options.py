"""Option families: one frozen dataclass per family is the single spec of its options.

A family's fields carry their help, choices, range and whether they are an ablation knob (``advanced``) in
the field metadata (:func:`option`). From that one spec the CLI builds its ``--prefix-name`` flags
(:func:`add_arguments`, :func:`from_args`), the ComfyUI nodes build their inputs (``nodes/options.py``), and
the rules get validated values (:func:`validate`, called by each family's ``__post_init__``).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """What a field of an option family is, beyond its name and default."""

    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    advanced: bool = False      # an ablation knob: not in the default node UI


def option(default: Any, help: str, *, choices: tuple = (), minimum: float | None = None,
           maximum: float | None = None, step: float | None = None, advanced: bool = False) -> Any:
    """A dataclass field with its :class:`Spec`."""
    spec = Spec(help=help, choices=tuple(choices), minimum=minimum, maximum=maximum, step=step, advanced=advanced)
    return field(default=default, metadata={"spec": spec})


def spec_of(f: Field) -> Spec:
    return f.metadata["spec"]


def specified_fields(cls: type) -> list[Field]:
    """The fields of a family, in declaration order."""
    return [f for f in fields(cls) if "spec" in f.metadata]


def kind_of(f: Field) -> type:
    """bool, int, float or str, from the field's default (``None`` defaults are strings: e.g. layers)."""
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


def validate(instance: Any) -> None:
    """Raise ``ValueError`` naming the family, the field, the value and what is expected."""
    family = type(instance).__name__
    for f in specified_fields(type(instance)):
        spec, value = spec_of(f), getattr(instance, f.name)
        kind = kind_of(f)
        where = f"{family}.{f.name}"
        if spec.choices and value not in spec.choices:
            raise ValueError(f"{where} {value!r} is unknown; expected one of {', '.join(map(str, spec.choices))}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false; got {value!r}")
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where} must be a finite number; got {value!r}")
            if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
                raise ValueError(f"{where} must be in [{spec.minimum:g}, {spec.maximum:g}]; got {value!r}"
                                 if spec.minimum is not None and spec.maximum is not None else
                                 f"{where} must be >= {spec.minimum:g}; got {value!r}" if spec.minimum is not None
                                 else f"{where} must be <= {spec.maximum:g}; got {value!r}")


def flag(prefix: str, name: str) -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def add_arguments(group: argparse._ActionsContainer, cls: type, prefix: str) -> None:
    """``--<prefix><name>`` for every field of ``cls`` (booleans become on/off flags)."""
    for f in specified_fields(cls):
        spec, kind = spec_of(f), kind_of(f)
        name = flag(prefix, f.name)
        if kind is bool:
            group.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=spec.help)
        elif spec.choices:
            group.add_argument(name, default=f.default, choices=spec.choices, help=spec.help)
        else:
            group.add_argument(name, type=kind, default=f.default, help=spec.help)


def from_args(args: argparse.Namespace, cls: type[T], prefix: str) -> T:
    """An instance of ``cls`` from the flags :func:`add_arguments` added."""
    dest = prefix.replace("-", "_")
    return cls(**{f.name: getattr(args, f"{dest}{f.name}") for f in specified_fields(cls)})


def from_values(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of ``cls`` from a name -> value mapping (e.g. a node's inputs); unknown names are an error."""
    known = {f.name for f in specified_fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {', '.join(sorted(unknown))}; it has {', '.join(sorted(known))}")
    return cls(**values)

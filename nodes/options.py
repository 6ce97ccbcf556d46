"""Node inputs from the engine's option families (``tcts/options.py``): one spec for the CLI, the nodes and
the rules. ``prefix``/``rename`` keep the input names that saved workflows already use."""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

from ..tcts.options import kind_of, spec_of, specified_fields
from .api import io

T = TypeVar("T")


def option_inputs(cls: type, *, prefix: str = "", advanced: bool | None = None, optional: bool = False,
                  rename: Mapping[str, str] | None = None, only: tuple[str, ...] | None = None) -> list:
    """An input per field of ``cls`` (``advanced``: only the ablation knobs, only the others, or all when None)."""
    rename = rename or {}
    inputs = []
    for f in specified_fields(cls):
        spec, kind = spec_of(f), kind_of(f)
        if (advanced is not None and spec.advanced != advanced) or (only is not None and f.name not in only):
            continue
        name = rename.get(f.name, prefix + f.name)
        common: dict[str, Any] = {"default": f.default, "tooltip": spec.help, "optional": optional}
        if spec.choices:
            inputs.append(io.Combo.Input(name, options=list(spec.choices), **common))
        elif kind is bool:
            inputs.append(io.Boolean.Input(name, **common))
        elif kind in (int, float):
            bounds = {k: v for k, v in (("min", spec.minimum), ("max", spec.maximum), ("step", spec.step))
                      if v is not None}
            inputs.append((io.Int if kind is int else io.Float).Input(name, **bounds, **common))
        else:
            inputs.append(io.String.Input(name, **common))
    return inputs


def option_values(cls: type[T], values: Mapping[str, Any], *, prefix: str = "", base: T | None = None,
                  rename: Mapping[str, str] | None = None) -> T:
    """An instance of ``cls`` from node inputs (fields the node does not have keep ``base``'s or the default)."""
    rename = rename or {}
    taken = {}
    for f in specified_fields(cls):
        name = rename.get(f.name, prefix + f.name)
        if name in values:
            value = values[name]
            taken[f.name] = value.strip() if isinstance(value, str) and kind_of(f) is str and not spec_of(f).choices \
                else value
        elif base is not None:
            taken[f.name] = getattr(base, f.name)
    return cls(**taken)

"""Sampling settings a model folder recommends, and how they combine with what the user asked for.

A model folder may hold ``tcts_settings.json`` beside ``model_index.json``::

    {"_class_name": "TCTSSamplingSettings", "format_version": 1,
     "cfg": 2.0, "steps": 16, "schedule": "cosine", "size": [64, 64], "trained_sizes": [[64, 64]]}

Every field is optional: ``cfg``, ``steps``, ``schedule``, ``choice_temperature`` ([start, end]),
``temperature``, ``size`` ([width, height] in px) and ``trained_sizes`` (the [width, height] pairs the model
was trained at; other sizes run but warn). A folder without the file keeps the reference pipeline's
defaults (diffusers ``AmusedPipeline``: 12 steps, cfg 10, the scheduler config's mask schedule, choice
temperature 2 -> 0, the checkpoint's own size). A value the user gives always wins.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .checkpoints import CheckpointError
from .sampling.schedules import SCHEDULES

SETTINGS_FILE = "tcts_settings.json"
CLASS_NAME = "TCTSSamplingSettings"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Sampling:
    """How one run samples: the settings every sampler shares. ``None`` = not given: resolved from the model
    folder's ``tcts_settings.json``, else the reference (:func:`resolve_sampling`)."""

    steps: int | None = None
    cfg: float | None = None
    schedule: str | None = None
    choice_temperature: tuple[float, float] | None = None
    temperature: float | None = None
    #: draw the proposals with per-image generators on the model's device instead of the reference's CPU
    #: generators (GPU speed; other tokens than the reference; no effect on the CPU)
    draw_on_device: bool | None = None

    def complete(self) -> bool:
        return all(getattr(self, f.name) is not None for f in fields(self))


#: the reference pipeline's defaults (diffusers AmusedPipeline)
REFERENCE = Sampling(steps=12, cfg=10.0, schedule="cosine", choice_temperature=(2.0, 0.0), temperature=1.0,
                     draw_on_device=False)
SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


@dataclass(frozen=True)
class ModelSettings:
    """What a model folder recommends (``tcts_settings.json``); ``None`` = no recommendation."""

    steps: int | None = None
    cfg: float | None = None
    schedule: str | None = None
    choice_temperature: tuple[float, float] | None = None
    temperature: float | None = None
    size: tuple[int, int] | None = None                       # (width, height) px
    trained_sizes: tuple[tuple[int, int], ...] = ()            # (width, height) px pairs
    source: Path | None = field(default=None, compare=False)  # the file they came from

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: Path | None = None) -> "ModelSettings":
        where = str(source or SETTINGS_FILE)
        if data.get("_class_name", CLASS_NAME) != CLASS_NAME:
            raise CheckpointError(f"{where}: _class_name is {data.get('_class_name')!r}, expected {CLASS_NAME!r}")
        if int(data.get("format_version", 1)) > FORMAT_VERSION:
            raise CheckpointError(f"{where}: format {data['format_version']} is newer than this tcts reads "
                                  f"({FORMAT_VERSION}); update tcts")

        def pair(value: Any, what: str, kind: type) -> tuple:
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise CheckpointError(f"{where}: {what} must be a pair [a, b]; got {value!r}")
            return tuple(kind(v) for v in value)

        out = cls(source=source)
        if "steps" in data:
            out = replace(out, steps=int(data["steps"]))
        if "cfg" in data:
            out = replace(out, cfg=float(data["cfg"]))
        if "schedule" in data:
            if data["schedule"] not in SCHEDULES:
                raise CheckpointError(f"{where}: schedule {data['schedule']!r} is not one of {', '.join(SCHEDULES)}")
            out = replace(out, schedule=str(data["schedule"]))
        if "choice_temperature" in data:
            out = replace(out, choice_temperature=pair(data["choice_temperature"], "choice_temperature", float))
        if "temperature" in data:
            out = replace(out, temperature=float(data["temperature"]))
        if "size" in data:
            out = replace(out, size=pair(data["size"], "size", int))
        if "trained_sizes" in data:
            out = replace(out, trained_sizes=tuple(pair(s, "each of trained_sizes", int) for s in data["trained_sizes"]))
        out.validate(where)
        return out

    def validate(self, where: str) -> None:
        bad = []
        if self.steps is not None and self.steps < 1:
            bad.append(f"steps {self.steps} (>= 1)")
        if self.cfg is not None and not (math.isfinite(self.cfg) and self.cfg >= 0):
            bad.append(f"cfg {self.cfg} (finite, >= 0)")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            bad.append(f"temperature {self.temperature} (> 0)")
        for size in ((self.size,) if self.size else ()) + self.trained_sizes:
            if min(size) <= 0:
                bad.append(f"size {size} (positive px)")
        if bad:
            raise CheckpointError(f"{where}: invalid {', '.join(bad)}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": CLASS_NAME, "format_version": FORMAT_VERSION}
        for name in ("cfg", "steps", "schedule", "choice_temperature", "temperature", "size"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.trained_sizes:
            out["trained_sizes"] = [list(s) for s in self.trained_sizes]
        return out

    def recommended(self) -> dict[str, Any]:
        """The sampling values this model sets (name -> value)."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS
                if getattr(self, name, None) is not None}

    def size_warning(self, width: int, height: int) -> str | None:
        """A warning when ``width`` x ``height`` is not a size the model was trained at (None if it is, or
        if the model does not say)."""
        if not self.trained_sizes or (width, height) in self.trained_sizes:
            return None
        trained = ", ".join(f"{w}x{h}" for w, h in self.trained_sizes)
        return (f"{width}x{height} px is not a size this model was trained at ({trained}); it runs, but expect "
                "poor pictures")


def read_model_settings(folder: str | Path) -> ModelSettings:
    """The settings file of a model folder, or empty settings when there is none."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return ModelSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return ModelSettings.from_json(data, path)


@dataclass(frozen=True)
class Resolved:
    """Sampling settings of a run, and where each value came from ("user", "model" or "reference")."""

    sampling: Sampling
    origin: dict[str, str]

    def from_model(self) -> dict[str, Any]:
        return {k: getattr(self.sampling, k) for k, v in self.origin.items() if v == "model"}

    def describe_model_values(self, settings: ModelSettings) -> str | None:
        """One line naming the values taken from the model folder, or None."""
        values = self.from_model()
        if not values:
            return None
        shown = ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in values.items())
        return f"settings from {settings.source}: {shown}"


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return " -> ".join(_fmt(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def resolve_sampling(user: Sampling, model: ModelSettings, base: Sampling = REFERENCE) -> Resolved:
    """``user`` values (``None`` = not given) over the model's over ``base`` (the reference, or the
    scheduler config's schedule)."""
    values, origin = {}, {}
    recommended = model.recommended()
    for name in SAMPLING_FIELDS:
        given = getattr(user, name)
        if given is not None:
            values[name], origin[name] = given, "user"
        elif name == "draw_on_device":
            values[name], origin[name] = base.draw_on_device, "reference"
        elif name in recommended:
            values[name], origin[name] = recommended[name], "model"
        else:
            values[name], origin[name] = getattr(base, name), "reference"
    values["choice_temperature"] = tuple(float(t) for t in values["choice_temperature"])
    origin.pop("draw_on_device")
    return Resolved(Sampling(**values), origin)

"""The shapes worlds by name: what a script needs to draw, render and check scenes of one world.

``v2`` (:mod:`lab.shapes.world`, the shipped ``models/shapes-demo`` world: one layout per caption) and
``v3`` (:mod:`lab.shapes.world_v3`: many valid pictures per caption). Both speak the same caption grammar
and share the held-out split, so a caption means the same in both; they differ in which pictures are
right, hence each brings its own detector rules. A model folder names its world in ``training.json``
(``"world"``; folders without it are v2), see :func:`world_of_folder`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .detector import aggregate

WORLD_NAMES = ("v2", "v3")
DEFAULT_WORLD = "v2"


@dataclass(frozen=True)
class World:
    name: str
    sample_scene: Callable[..., Any]            # (seed, split="train", n_objects=None, count_probs=...) -> scene
    render_batch: Callable[..., np.ndarray]     # (scenes, size=64) -> [B, size, size, 3]
    check: Callable[[np.ndarray, Any], dict]    # (image, caption) -> lab.shapes.detector.check's record

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> dict:
        """Aggregate detector metrics (:func:`lab.shapes.detector.aggregate`) under this world's rules."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        return aggregate([self.check(im, c) for im, c in zip(images, captions)])


def get_world(name: str) -> World:
    """The world called ``name`` (one of :data:`WORLD_NAMES`)."""
    if name == "v2":
        from . import detector, world
        return World("v2", world.sample_scene, world.render_batch, detector.check)
    if name == "v3":
        from . import detector_v3, world_v3
        return World("v3", world_v3.sample_scene, world_v3.render_batch, detector_v3.check)
    raise ValueError(f"unknown shapes world {name!r}; expected one of {', '.join(WORLD_NAMES)}")


def world_of_folder(folder: Path) -> str:
    """The world a model folder was trained on: ``training.json``'s ``"world"``, else v2."""
    info = Path(folder) / "training.json"
    if not info.is_file():
        return DEFAULT_WORLD
    name = json.loads(info.read_text()).get("world", DEFAULT_WORLD)
    if name not in WORLD_NAMES:
        raise ValueError(f"{info} names world {name!r}; expected one of {', '.join(WORLD_NAMES)}")
    return name

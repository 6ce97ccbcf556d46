"""Edit cases of the edit benchmark (:mod:`lab.bench.edit`): one attribute of one object of a held-out shapes
scene changed by one word.

A case is drawn from ``sample_scene([EDIT_SEED, attribute, word type, i], "heldout")`` and a numpy generator
seeded the same way: an object, a new value of the attribute (a colour no other object has, another shape,
the other size) and the word that names the object:

* ``noun``: its shape (``circle``);
* ``adjective``: its colour for colour and shape edits (``red``), its size for size edits (``large``);
* ``phrase``: size, colour and shape (``large red circle``).

A draw is skipped when the word names more than one object of the source caption (a repeated shape or
size), and size edits skip three-object scenes (the world draws three small objects only). The target scene
keeps the background and the other objects; the layout follows the caption (a resized object moves to where
the world puts an object of its new size), so the true cells are the object's tile in the source **and** in
the target.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..shapes.world import COLOURS, GRID, SHAPES, SIZES, Scene, layout, sample_scene

EDIT_SEED = 1807                       # disjoint from the sampler benchmark's scenes (EVAL_SEED 99 and near)
ATTRIBUTES = ("colour", "shape", "size")
WORD_TYPES = ("noun", "adjective", "phrase")


@dataclass(frozen=True)
class EditCase:
    source: Scene
    target: Scene
    attribute: str
    word_type: str
    index: int                         # the edited object's index in the scene
    word: str

    @property
    def source_caption(self) -> str:
        return self.source.caption

    @property
    def target_caption(self) -> str:
        return self.target.caption

    def cells(self) -> np.ndarray:
        """``[GRID, GRID]`` bool: the edited object's tile in the source and in the target."""
        out = np.zeros((GRID, GRID), bool)
        for scene in (self.source, self.target):
            o = scene.objects[self.index]
            out[o.y:o.y + o.cells, o.x:o.x + o.cells] = True
        return out


def word_for(scene: Scene, index: int, attribute: str, word_type: str) -> str:
    """The word of ``word_type`` that names object ``index`` (module docstring)."""
    o = scene.objects[index]
    if word_type == "noun":
        return o.shape
    if word_type == "adjective":
        return o.size if attribute == "size" else o.colour
    if word_type == "phrase":
        return f"{o.size} {o.colour} {o.shape}"
    raise ValueError(f"word type {word_type!r} is unknown; expected one of {', '.join(WORD_TYPES)}")


def names_one_object(scene: Scene, word: str) -> bool:
    """Whether ``word`` occurs in exactly one object's phrase of the scene."""
    return sum(f" {word} " in f" {o.size} {o.colour} {o.shape} " for o in scene.objects) == 1


def changed(scene: Scene, index: int, attribute: str, rng: np.random.Generator) -> Scene:
    """The scene with object ``index``'s attribute set to another value (background and the rest kept)."""
    objs = list(scene.objects)
    o = objs[index]
    if attribute == "colour":
        free = [c for c in COLOURS if c not in {x.colour for x in objs}]
        objs[index] = dataclasses.replace(o, colour=free[rng.integers(len(free))])
    elif attribute == "shape":
        others = [s for s in SHAPES if s != o.shape]
        objs[index] = dataclasses.replace(o, shape=others[rng.integers(len(others))])
    elif attribute == "size":
        objs[index] = dataclasses.replace(o, size=next(s for s in SIZES if s != o.size))
        places = layout([x.size for x in objs], scene.relation)
        objs = [dataclasses.replace(x, x=p[0], y=p[1]) for x, p in zip(objs, places)]
    else:
        raise ValueError(f"attribute {attribute!r} is unknown; expected one of {', '.join(ATTRIBUTES)}")
    return dataclasses.replace(scene, objects=tuple(objs))


def make_cases(attribute: str, word_type: str, count: int, max_draws: int = 100_000) -> list[EditCase]:
    """``count`` deterministic cases of one attribute x word type (module docstring)."""
    a, w = ATTRIBUTES.index(attribute), WORD_TYPES.index(word_type)
    cases: list[EditCase] = []
    for i in range(max_draws):
        if len(cases) == count:
            return cases
        scene = sample_scene([EDIT_SEED, a, w, i], "heldout")
        if attribute == "size" and len(scene.objects) == 3:
            continue
        rng = np.random.default_rng([EDIT_SEED, a, w, i, 1])
        index = int(rng.integers(len(scene.objects)))
        word = word_for(scene, index, attribute, word_type)
        if not names_one_object(scene, word):
            continue
        cases.append(EditCase(scene, changed(scene, index, attribute, rng), attribute, word_type, index, word))
    raise RuntimeError(f"only {len(cases)} {attribute} x {word_type} cases in {max_draws} draws; asked for {count}")

"""The shapes world v3: the v2 caption grammar, but many valid pictures per caption.

World v2 (:mod:`lab.shapes.world`) fixes the layout as a function of the caption, so a sampler never
has to choose between alternatives. World v3 keeps v2's picture elements and caption grammar
(:func:`lab.shapes.world.parse_caption` reads both) and frees what a caption does not say, always on
the 8 x 8 cell grid so that every cell is still one exact token (``docs/shapes-world.md``, "World v3"):

* **positions**: an object's tile sits at *any* cell position where the caption's relation holds
  (:func:`placements`): "A left of B" = A's tile ends at or before the column where B's tile starts,
  at any rows; a 3-object row "A, B and C from left to right" = three small tiles in that column
  order, at any rows. Tiles never overlap.
* **sizes**: ``small`` is a 2 x 2-cell tile; ``large`` is a 3 x 3- or a 4 x 4-cell tile
  (:data:`SIDES`), drawn (like v2) as a near-black plate with the shape inset by a quarter cell.
* **background textures**: v2's kinds and greys, and striped / checkered / noisy come at two scales
  (:data:`TEXTURE_BLOCKS`): features of half a cell (v2) or of a whole cell (a simpler picture that
  the caption allows just as well).

A world without alternatives cannot show what choosing between alternatives does; v1 (free,
non-aligned placements) showed that the alternatives must stay aligned to the token grid.

Held-out split: v2's combinations (:data:`lab.shapes.world.HELDOUT_COLOUR_PAIRS` etc.), so every
picture element of a held-out caption (an object tile of that side, colour and shape; a background
cell) occurs in training. Scenes are drawn from a seed: per object a side, then a placement uniformly
among the valid ones, then the background.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Iterator, Sequence

import numpy as np

from .world import (BACKGROUNDS, COLOURS, GREY_PAIRS, GREYS, GRID, INSET, OBJECT_COUNT_PROBS, PLATE, RELATIONS,
                    SHAPES, CaptionSpec, coverage, parse_caption, scene_caption)

#: tile sides (in cells) a size word allows
SIDES: dict[str, tuple[int, ...]] = {"small": (2,), "large": (3, 4)}
#: feature sizes of striped / checkered / noisy backgrounds, in half cells (1 = v2's half-cell bands)
TEXTURE_BLOCKS = (1, 2)
TEXTURED = ("striped", "checkered", "noisy")

Cell = tuple[int, int]


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str       # the caption's word
    side: int       # tile side in cells, one of SIDES[size]
    x: int          # left cell
    y: int          # top cell

    @property
    def cells(self) -> int:
        return self.side

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Background:
    """A grey background. ``block`` is the feature size of striped / checkered / noisy in half cells
    (1 or 2; 0 for flat and gradient)."""

    kind: str
    greys: tuple[float, float]     # (a, b); flat uses a only
    vertical: bool = False         # gradient / stripes vary along y
    block: int = 0
    seed: int = 0                  # noise pattern

    def render(self, size: int) -> np.ndarray:
        """``[size, size]`` grey values (float32)."""
        a, b = self.greys
        idx = np.arange(size)
        if self.kind == "flat":
            return np.full((size, size), a, np.float32)
        if self.kind == "gradient":
            ramp = a + (b - a) * (idx + 0.5) / size
            g = np.broadcast_to(ramp[:, None] if self.vertical else ramp[None, :], (size, size))
            return np.ascontiguousarray(g, dtype=np.float32)
        if self.block not in TEXTURE_BLOCKS:
            raise ValueError(f"{self.kind} needs block in {TEXTURE_BLOCKS}; got {self.block}")
        unit = size // (2 * GRID) * self.block       # feature size in px
        band = (idx // unit) % 2
        if self.kind == "striped":
            sel = np.broadcast_to(band[:, None] if self.vertical else band[None, :], (size, size))
        elif self.kind == "checkered":
            sel = band[:, None] ^ band[None, :]
        elif self.kind == "noisy":
            n = size // unit
            blocks = np.random.default_rng(self.seed).integers(0, 2, (n, n))
            sel = np.repeat(np.repeat(blocks, unit, 0), unit, 1)
        else:
            raise ValueError(f"unknown background {self.kind!r}")
        return np.where(sel == 1, b, a).astype(np.float32)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: Background
    relation: str | None = None    # for 2 objects: relation of objects[0] to objects[1]

    @property
    def caption(self) -> str:
        return scene_caption(self.objects, self.relation, self.background.kind)

    @property
    def spec(self) -> CaptionSpec:
        return parse_caption(self.caption)


# --- what a caption allows ------------------------------------------------------------------------

def _separated(a: tuple[int, int, int], b: tuple[int, int, int], relation: str) -> bool:
    """Tiles ``(x, y, side)``: does ``a <relation> b`` hold with the tiles apart along the axis?"""
    (ax, ay, asd), (bx, by, bsd) = a, b
    return {"left of": ax + asd <= bx, "right of": bx + bsd <= ax,
            "above": ay + asd <= by, "below": by + bsd <= ay}[relation]


@lru_cache(maxsize=None)
def placements(sides: tuple[int, ...], relation: str | None) -> tuple[tuple[Cell, ...], ...]:
    """Every valid cell position ``((x, y), ...)`` of tiles with these sides, in a fixed order.

    One tile: anywhere on the grid. Two: ``objects[0] <relation> objects[1]``, tiles apart along the
    relation's axis (so they never overlap), any offset across it. Three (a row from left to right):
    each tile ends at or before the next one starts."""
    spots = [[(x, y) for y in range(GRID - s + 1) for x in range(GRID - s + 1)] for s in sides]
    if len(sides) == 1:
        return tuple((p,) for p in spots[0])
    if len(sides) == 2:
        if relation not in RELATIONS:
            raise ValueError(f"two objects need a relation out of {RELATIONS}; got {relation!r}")
        return tuple((p, q) for p, q in product(*spots)
                     if _separated((*p, sides[0]), (*q, sides[1]), relation))
    if len(sides) == 3:
        return tuple((p, q, r) for p, q, r in product(*spots)
                     if _separated((*p, sides[0]), (*q, sides[1]), "left of")
                     and _separated((*q, sides[1]), (*r, sides[2]), "left of"))
    raise ValueError(f"a scene has 1 to 3 objects; got {len(sides)}")


def side_choices(size_words: Sequence[str]) -> list[tuple[int, ...]]:
    """Every combination of tile sides the size words allow (three objects are always small)."""
    if len(size_words) == 3 and any(w != "small" for w in size_words):
        raise ValueError("three objects in a row must all be small")
    return [tuple(c) for c in product(*(SIDES[w] for w in size_words))]


def layouts(spec: CaptionSpec) -> list[tuple[tuple[int, ...], tuple[Cell, ...]]]:
    """Every object layout ``(sides, positions)`` a caption allows (each is a distinct token layout of
    the objects)."""
    relation = spec.relations[0][1] if len(spec.objects) == 2 else None
    return [(sides, pos) for sides in side_choices([o.size for o in spec.objects])
            for pos in placements(sides, relation)]


def background_variants(kind: str) -> list[Background]:
    """Every background of a kind up to its noise pattern (one representative per (block, greys) for
    noisy)."""
    ordered = [p for pair in GREY_PAIRS for p in (pair, pair[::-1])]
    if kind == "flat":
        return [Background("flat", (g, g)) for g in GREYS]
    if kind == "gradient":
        return [Background("gradient", p, v) for p in ordered for v in (False, True)]
    if kind == "striped":
        return [Background("striped", p, v, blk) for p in ordered for v in (False, True) for blk in TEXTURE_BLOCKS]
    if kind == "checkered":
        return [Background("checkered", p, False, blk) for p in ordered for blk in TEXTURE_BLOCKS]
    if kind == "noisy":
        return [Background("noisy", pair, False, blk) for pair in GREY_PAIRS for blk in TEXTURE_BLOCKS]
    raise ValueError(f"unknown background {kind!r}")


# --- sampling --------------------------------------------------------------------------------------

def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else int(seed))


def sample_background(rng: np.random.Generator, kind: str | None = None) -> Background:
    """A background of ``kind`` (drawn uniformly when None): v2's greys and directions, and for
    striped / checkered / noisy a feature size of half a cell or a cell."""
    kind = kind or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if kind == "flat":
        g = float(GREYS[rng.integers(len(GREYS))])
        greys = (g, g)
    else:
        pair = GREY_PAIRS[rng.integers(len(GREY_PAIRS))]
        greys = pair if rng.integers(2) == 0 else (pair[1], pair[0])
    vertical = bool(rng.integers(2))
    block = int(TEXTURE_BLOCKS[rng.integers(len(TEXTURE_BLOCKS))]) if kind in TEXTURED else 0
    return Background(kind, (float(greys[0]), float(greys[1])), vertical and kind in ("gradient", "striped"), block,
                      int(rng.integers(2**31)) if kind == "noisy" else 0)


def sample_layout(rng: np.random.Generator, size_words: Sequence[str], relation: str | None
                  ) -> tuple[tuple[int, ...], tuple[Cell, ...]]:
    """Per object a side (uniform among its size word's sides), then a placement uniform among the valid
    ones."""
    sides = tuple(int(SIDES[w][rng.integers(len(SIDES[w]))]) for w in size_words)
    options = placements(sides, relation)
    return sides, options[rng.integers(len(options))]


def sample_scene(seed: int | Sequence[int], split: str = "train", n_objects: int | None = None,
                 count_probs: Sequence[float] = OBJECT_COUNT_PROBS, max_tries: int = 1000) -> Scene:
    """A deterministic scene of the given split (``train``, ``heldout`` or ``any``)."""
    if split not in ("train", "heldout", "any"):
        raise ValueError(f"split must be train, heldout or any; got {split!r}")
    rng = _rng(seed)
    n = n_objects or int(rng.choice(3, p=np.asarray(count_probs) / np.sum(count_probs))) + 1
    names = list(COLOURS)
    for _ in range(max_tries):
        colours = rng.permutation(len(names))[:n]
        words = ["small"] * 3 if n == 3 else [list(SIDES)[rng.integers(len(SIDES))] for _ in range(n)]
        shapes = [SHAPES[rng.integers(len(SHAPES))] for _ in range(n)]
        relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 else None
        sides, pos = sample_layout(rng, words, relation)
        objs = tuple(Obj(shapes[i], names[colours[i]], words[i], sides[i], *pos[i]) for i in range(n))
        scene = Scene(objs, sample_background(rng), relation)
        if split == "any" or scene.spec.heldout == (split == "heldout"):
            return scene
    raise RuntimeError(f"no {split} scene found in {max_tries} tries (n_objects={n_objects})")


def scene_from_caption(caption: str, seed: int = 0) -> Scene:
    """One of the scenes a caption describes: sides, placement and background drawn from ``seed``."""
    spec = parse_caption(caption)
    if len({o.colour for o in spec.objects}) != len(spec.objects):
        raise ValueError(f"objects of a scene need distinct colours: {caption!r}")
    relation = spec.relations[0][1] if len(spec.objects) == 2 else None
    rng = _rng(seed)
    sides, pos = sample_layout(rng, [o.size for o in spec.objects], relation)
    objs = tuple(Obj(o.shape, o.colour, o.size, s, *p) for o, s, p in zip(spec.objects, sides, pos))
    return Scene(objs, sample_background(rng, spec.background), relation)


def scenes(split: str, count: int, seed: int = 0, n_objects: int | None = None) -> Iterator[Scene]:
    """``count`` scenes of a split; scene ``i`` is ``sample_scene([seed, i], split, n_objects)``."""
    for i in range(count):
        yield sample_scene([seed, i], split, n_objects)


# --- rendering -------------------------------------------------------------------------------------

def tile(obj: Obj, cell: int) -> np.ndarray:
    """``[side * cell, side * cell, 3]`` pixels of an object's tile (plate + inset shape)."""
    cov = coverage(obj.shape, obj.side * cell, inset_px=INSET * cell)[:, :, None]
    return PLATE * (1 - cov) + np.asarray(COLOURS[obj.colour], np.float32) * cov


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """RGB image ``[size, size, 3]`` float32 in [0, 1] (size a multiple of 16)."""
    if size % (2 * GRID):
        raise ValueError(f"size must be a multiple of {2 * GRID}; got {size}")
    cell = size // GRID
    img = np.repeat(scene.background.render(size)[:, :, None], 3, axis=2)
    for o in scene.objects:
        side = o.side * cell
        img[o.y * cell:o.y * cell + side, o.x * cell:o.x * cell + side] = tile(o, cell)
    return img


def render_batch(batch: Sequence[Scene], size: int = 64) -> np.ndarray:
    """``[B, size, size, 3]`` float32."""
    return np.stack([render(s, size) for s in batch])

"""The shapes world: deterministic compositional scenes with template captions.

A scene holds 1–3 objects (shape x colour x size) with a spatial relation, on a grey background of a
given frequency content. Everything is drawn from a seed, so scene ``i`` of a split is the same on
every machine.

Design for learnability on a small CPU budget (see ``docs/shapes-world.md``):

* The canvas is a grid of 8 x 8 *cells*; one cell is one VQ token (8 px at 64 px with an f=8 VQ,
  16 px at 128 px with an f=16 VQ). An object is a **cell-aligned tile** of ``2`` (small) or ``4``
  (large) cells: a near-black plate with the shape drawn **inset by a quarter cell** (:data:`INSET`).
  So every cell of an object is a distinct piece (corner, edge, interior) that implies its
  neighbours, and an object's tokens do not depend on the background behind it.
* The **layout is a function of the caption** (:func:`layout`): one object sits in the centre; two
  objects sit in the two halves along the relation's axis; three small objects in a row. A first
  world with free positions left shape at chance after 40 k training images: every token's target
  was a mixture over positions, and parallel decoding drew fragments of several placements.
* Objects in one scene have **distinct colours** (the detector anchors objects by colour).
* Object colours are saturated hues 60 degrees apart; backgrounds are **grey only** (chroma 0), so
  an object pixel is simply a saturated pixel.
* Backgrounds, by rising frequency: ``flat`` (one grey), ``gradient`` (linear ramp), ``striped``
  (bands of half a cell), ``checkered`` (squares of half a cell), ``noisy`` (random half-cell
  blocks of two greys). Patterns are aligned to the cell grid. The greys, directions and the noise
  pattern are the scene's free variables.

Captions (exact grammar; :func:`parse_caption` inverts it)::

    1 object : "a large red circle on a striped background"
    2 objects: "a large red circle left of a small blue triangle on a flat background"
               (relations: left of, right of, above, below)
    3 objects: "a small red circle, a small blue square and a small green triangle from left to right
               on a noisy background"   (three objects are always small: three large tiles do not fit)

Splits are defined by *combination* (:data:`HELDOUT_COLOUR_PAIRS`, :data:`HELDOUT_RELATIONS`,
:data:`HELDOUT_BACKGROUNDS`): a caption is held out iff its first two objects have a held-out
(colour, colour) pair, it contains a held-out (shape, relation, shape) triple or a held-out (colour,
background) pair. Every single attribute still occurs in training in every role, and every held-out
combination is made of token pieces the generator sees in training (an object's pieces depend only on
its size, colour and shape), so a held-out caption is a new *arrangement*, never a new picture element.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

GRID = 8                                      # cells per side (= tokens per side)
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "yellow": (0.92, 0.86, 0.08),
    "green": (0.10, 0.78, 0.12),
    "cyan": (0.08, 0.78, 0.80),
    "blue": (0.12, 0.22, 0.95),
    "purple": (0.68, 0.12, 0.90),
}
SIZES: dict[str, int] = {"small": 2, "large": 4}   # side of the object's tile, in cells
INSET = 0.25                                  # each shape is drawn inset by a quarter cell inside its tile
PLATE = 0.05                                  # grey of an object's tile (darker than every background grey)
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUNDS = ("flat", "gradient", "striped", "checkered", "noisy")
# Grey pairs (dark, light) used by backgrounds; flat uses one of the four greys.
GREY_PAIRS = ((0.22, 0.52), (0.40, 0.72), (0.60, 0.92))
GREYS = (0.25, 0.45, 0.65, 0.88)
OBJECT_COUNT_PROBS = (0.45, 0.40, 0.15)     # default P(1), P(2), P(3 objects)

# --- the held-out split (by combination) -------------------------------------------------------
# (colour of the first object, colour of the second): each colour loses one partner in each role.
HELDOUT_COLOUR_PAIRS = frozenset({
    ("red", "blue"), ("blue", "yellow"), ("yellow", "purple"), ("purple", "green"), ("green", "cyan"),
    ("cyan", "red"),
})
# (shape of A, relation, shape of B) for "A <relation> B"; a 3-object row "A, B and C from left to
# right" implies "A left of B" and "B left of C".
HELDOUT_RELATIONS = frozenset({
    ("circle", "above", "square"), ("triangle", "left of", "circle"),
    ("square", "right of", "triangle"), ("circle", "below", "triangle"),
})
HELDOUT_BACKGROUNDS = frozenset({
    ("red", "checkered"), ("blue", "striped"), ("yellow", "noisy"), ("green", "gradient"),
    ("purple", "flat"), ("cyan", "striped"),
})


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    x: int          # left cell
    y: int          # top cell

    @property
    def cells(self) -> int:
        return SIZES[self.size]

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Background:
    kind: str
    greys: tuple[float, float]     # (a, b); flat uses a only
    vertical: bool = False         # gradient / stripes direction (vertical = varies along y)
    seed: int = 0                  # noise pattern

    def render(self, size: int) -> np.ndarray:
        """``[size, size]`` grey values (float32)."""
        a, b = self.greys
        half = size // (2 * GRID)                  # half a cell, in px
        idx = np.arange(size)
        if self.kind == "flat":
            return np.full((size, size), a, np.float32)
        if self.kind == "gradient":
            ramp = a + (b - a) * (idx + 0.5) / size
            g = np.broadcast_to(ramp[:, None] if self.vertical else ramp[None, :], (size, size))
            return np.ascontiguousarray(g, dtype=np.float32)
        band = (idx // half) % 2
        if self.kind == "striped":
            sel = band[:, None] if self.vertical else band[None, :]
            sel = np.broadcast_to(sel, (size, size))
        elif self.kind == "checkered":
            sel = band[:, None] ^ band[None, :]
        elif self.kind == "noisy":
            blocks = np.random.default_rng(self.seed).integers(0, 2, (2 * GRID, 2 * GRID))
            sel = np.repeat(np.repeat(blocks, half, 0), half, 1)
        else:
            raise ValueError(f"unknown background {self.kind!r}")
        return np.where(sel == 1, b, a).astype(np.float32)


def scene_caption(objects: Sequence, relation: str | None, background: str) -> str:
    """The caption grammar every world shares: one object, two with a relation, or three left to right."""
    bg = f"on a {background} background"
    o = objects
    if len(o) == 1:
        return f"{o[0].phrase} {bg}"
    if len(o) == 2:
        return f"{o[0].phrase} {relation} {o[1].phrase} {bg}"
    return f"{o[0].phrase}, {o[1].phrase} and {o[2].phrase} from left to right {bg}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: Background
    relation: str | None = None    # for 2 objects: relation of objects[0] to objects[1]
    jitter: tuple[tuple[int, int], ...] = ()   # per-object pixel offset at 64 px (scaled with size)

    @property
    def caption(self) -> str:
        return scene_caption(self.objects, self.relation, self.background.kind)

    @property
    def spec(self) -> "CaptionSpec":
        return parse_caption(self.caption)


@dataclass(frozen=True)
class ObjSpec:
    size: str
    colour: str
    shape: str


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption asserts: objects, pairwise relations (i, relation, j), background."""

    objects: tuple[ObjSpec, ...]
    relations: tuple[tuple[int, str, int], ...]
    background: str

    def combos(self) -> dict[str, set]:
        pairs = {(self.objects[0].colour, self.objects[1].colour)} if len(self.objects) > 1 else set()
        rels = {(self.objects[i].shape, r, self.objects[j].shape) for i, r, j in self.relations}
        bgs = {(o.colour, self.background) for o in self.objects}
        return {"colour_pairs": pairs, "relations": rels, "backgrounds": bgs}

    @property
    def heldout(self) -> bool:
        c = self.combos()
        return bool(c["colour_pairs"] & HELDOUT_COLOUR_PAIRS or c["relations"] & HELDOUT_RELATIONS
                    or c["backgrounds"] & HELDOUT_BACKGROUNDS)


_OBJ = r"a (small|large) (red|yellow|green|cyan|blue|purple) (circle|square|triangle)"
_BG = r" on a (flat|gradient|striped|checkered|noisy) background"
_RX1 = re.compile(rf"^{_OBJ}{_BG}$")
_RX2 = re.compile(rf"^{_OBJ} (left of|right of|above|below) {_OBJ}{_BG}$")
_RX3 = re.compile(rf"^{_OBJ}, {_OBJ} and {_OBJ} from left to right{_BG}$")


def parse_caption(text: str) -> CaptionSpec:
    """Invert the caption grammar; raises ValueError for text outside it."""
    t = " ".join(text.strip().lower().split())
    if m := _RX1.match(t):
        g = m.groups()
        return CaptionSpec((ObjSpec(*g[0:3]),), (), g[3])
    if m := _RX2.match(t):
        g = m.groups()
        return CaptionSpec((ObjSpec(*g[0:3]), ObjSpec(*g[4:7])), ((0, g[3], 1),), g[7])
    if m := _RX3.match(t):
        g = m.groups()
        objs = (ObjSpec(*g[0:3]), ObjSpec(*g[3:6]), ObjSpec(*g[6:9]))
        return CaptionSpec(objs, ((0, "left of", 1), (1, "left of", 2)), g[9])
    raise ValueError(f"not a shapes-world caption: {text!r}")


# --- sampling ------------------------------------------------------------------------------------

def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else int(seed))


def _sample_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if kind == "flat":
        g = float(GREYS[rng.integers(len(GREYS))])
        greys = (g, g)
    else:
        pair = GREY_PAIRS[rng.integers(len(GREY_PAIRS))]
        greys = pair if rng.integers(2) == 0 else (pair[1], pair[0])
    return Background(kind, (float(greys[0]), float(greys[1])), bool(rng.integers(2)), int(rng.integers(2**31)))


def _centred(side: int, lo: int = 0, hi: int = GRID) -> int:
    """First cell of a tile of ``side`` cells centred in the cell interval [lo, hi) (rounded down)."""
    return lo + (hi - lo - side) // 2


def layout(sizes: Sequence[str], relation: str | None) -> list[tuple[int, int]]:
    """Cell position (x, y) of each object's tile: a function of the caption only.

    One object: centred. Two: the first in the half the relation names (left half for "left of",
    top half for "above", ...), the second in the other half, both centred across the axis. Three:
    small tiles in columns 0-1, 3-4 and 6-7, centred vertically."""
    sides = [SIZES[s] for s in sizes]
    if len(sides) == 1:
        return [(_centred(sides[0]), _centred(sides[0]))]
    if len(sides) == 2:
        if relation not in RELATIONS:
            raise ValueError(f"two objects need a relation out of {RELATIONS}; got {relation!r}")
        half = GRID // 2
        first_low = relation in ("left of", "above")
        spans = ((0, half), (half, GRID)) if first_low else ((half, GRID), (0, half))
        along = [_centred(sides[i], *spans[i]) for i in range(2)]
        across = [_centred(sides[i]) for i in range(2)]
        horizontal = relation in ("left of", "right of")
        return [(along[i], across[i]) if horizontal else (across[i], along[i]) for i in range(2)]
    if len(sides) == 3:
        if any(s != SIZES["small"] for s in sides):
            raise ValueError("three objects in a row must all be small")
        return [(x, _centred(sides[0])) for x in (0, 3, 6)]
    raise ValueError(f"a scene has 1 to 3 objects; got {len(sides)}")


def sample_scene(seed: int | Sequence[int], split: str = "train", n_objects: int | None = None,
                 count_probs: Sequence[float] = OBJECT_COUNT_PROBS, jitter_px: int = 0,
                 max_tries: int = 1000) -> Scene:
    """A deterministic scene of the given split (``train``, ``heldout`` or ``any``)."""
    if split not in ("train", "heldout", "any"):
        raise ValueError(f"split must be train, heldout or any; got {split!r}")
    rng = _rng(seed)
    # the object count is drawn once, so every split has the same count distribution
    n = n_objects or int(rng.choice(3, p=np.asarray(count_probs) / np.sum(count_probs))) + 1
    for _ in range(max_tries):
        colours = rng.permutation(len(COLOURS))[:n]
        names = list(COLOURS)
        sizes = ["small"] * 3 if n == 3 else [list(SIZES)[rng.integers(2)] for _ in range(n)]
        shapes = [SHAPES[rng.integers(len(SHAPES))] for _ in range(n)]
        relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 else None
        pos = layout(sizes, relation)
        objs = tuple(Obj(shapes[i], names[colours[i]], sizes[i], *pos[i]) for i in range(n))
        jit = tuple((int(rng.integers(-jitter_px, jitter_px + 1)), int(rng.integers(-jitter_px, jitter_px + 1)))
                    for _ in range(n)) if jitter_px else ()
        scene = Scene(objs, _sample_background(rng), relation, jit)
        held = scene.spec.heldout
        if split == "any" or held == (split == "heldout"):
            return scene
    raise RuntimeError(f"no {split} scene found in {max_tries} tries (n_objects={n_objects})")


def scene_from_caption(caption: str, seed: int = 0) -> Scene:
    """The scene a caption describes (its layout is fixed); the background's free variables (greys,
    direction, noise pattern) are drawn from ``seed``."""
    spec = parse_caption(caption)
    sizes = [o.size for o in spec.objects]
    relation = spec.relations[0][1] if len(spec.objects) == 2 else None
    pos = layout(sizes, relation)
    objs = tuple(Obj(o.shape, o.colour, o.size, *p) for o, p in zip(spec.objects, pos))
    if len({o.colour for o in objs}) != len(objs):
        raise ValueError(f"objects of a scene need distinct colours: {caption!r}")
    rng = _rng(seed)
    while True:
        background = _sample_background(rng)
        if background.kind == spec.background:
            return Scene(objs, background, relation)


def scenes(split: str, count: int, seed: int = 0, n_objects: int | None = None) -> Iterator[Scene]:
    """``count`` scenes of a split; scene ``i`` is ``sample_scene([seed, i], split, n_objects)``."""
    for i in range(count):
        yield sample_scene([seed, i], split, n_objects)


# --- rendering -----------------------------------------------------------------------------------

def _coverage(shape: str, side_px: int, supersample: int, inset_px: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage ``[n, n]`` of a shape in a block of ``side_px`` pixels, drawn in the box
    inset by ``inset_px`` on every side."""
    n = int(round(side_px))
    k = n * supersample
    c = ((np.arange(k) + 0.5) / supersample - inset_px) / (n - 2 * inset_px)   # [0, 1] inside the inset box
    y, x = c[:, None], c[None, :]
    inside = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    if shape == "square":
        m = np.ones((k, k), bool)
    elif shape == "circle":
        m = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    elif shape == "triangle":                   # apex at top centre, base along the bottom
        m = np.abs(x - 0.5) <= y / 2
    else:
        raise ValueError(f"unknown shape {shape!r}")
    m = m & inside
    return m.reshape(n, supersample, n, supersample).mean(axis=(1, 3)).astype(np.float32)


_COVER_CACHE: dict[tuple, np.ndarray] = {}


def coverage(shape: str, side_px: int, supersample: int = 4, inset_px: float = 0.0) -> np.ndarray:
    key = (shape, side_px, supersample, inset_px)
    if key not in _COVER_CACHE:
        _COVER_CACHE[key] = _coverage(shape, side_px, supersample, inset_px)
    return _COVER_CACHE[key]


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """RGB image ``[size, size, 3]`` float32 in [0, 1] (size a multiple of 8 x 2)."""
    if size % (2 * GRID):
        raise ValueError(f"size must be a multiple of {2 * GRID}; got {size}")
    cell = size // GRID
    img = np.repeat(scene.background.render(size)[:, :, None], 3, axis=2)
    for i, o in enumerate(scene.objects):
        side = o.cells * cell
        cov = coverage(o.shape, side, inset_px=INSET * cell)
        x0, y0 = o.x * cell, o.y * cell
        if scene.jitter:
            dx, dy = scene.jitter[i]
            x0 = int(np.clip(x0 + dx * size // 64, 0, size - side))
            y0 = int(np.clip(y0 + dy * size // 64, 0, size - side))
        colour = np.asarray(COLOURS[o.colour], np.float32)
        img[y0:y0 + side, x0:x0 + side] = PLATE * (1 - cov[:, :, None]) + colour * cov[:, :, None]
    return img


def render_batch(batch: Sequence[Scene], size: int = 64) -> np.ndarray:
    """``[B, size, size, 3]`` float32."""
    return np.stack([render(s, size) for s in batch])


def all_captions_vocabulary() -> list[str]:
    """Every word the caption grammar uses (for the tokenizer)."""
    words = {"a", "on", "background", "and", "from", "left", "to", "right", "of", "above", "below", ","}
    words |= set(SHAPES) | set(COLOURS) | set(SIZES) | set(BACKGROUNDS)
    return sorted(words)

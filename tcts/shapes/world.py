"""The shapes world: deterministic compositional scenes with template captions.

A scene holds 1–3 objects (shape x colour x size) with a spatial relation, on a grey background of a
given frequency content. Everything is drawn from a seed, so scene ``i`` of a split is the same on
every machine.

Design for learnability on a small CPU budget (see ``docs/shapes-world.md``):

* The canvas is a grid of 8 x 8 *cells*; one cell is one VQ token (8 px at 64 px with an f=8 VQ,
  16 px at 128 px with an f=16 VQ). Objects are **cell-aligned** squares of ``2`` (small) or ``3``
  (large) cells, so every object covers whole tokens and each token sees one of a small set of
  object patches. ``jitter_px`` can shift objects off the grid (default 0: no jitter).
* Objects in one scene have **distinct colours** (the detector anchors objects by colour).
* Object colours are saturated hues 60 degrees apart; backgrounds are **grey only** (chroma 0), so
  an object pixel is simply a saturated pixel.
* Backgrounds, by rising frequency: ``flat`` (one grey), ``gradient`` (linear ramp), ``striped``
  (bands of half a cell), ``checkered`` (squares of half a cell), ``noisy`` (random half-cell
  blocks of two greys). Patterns are aligned to the cell grid.
* Relations put the objects' cell intervals apart along the relation axis (no overlap), so "left of"
  means every pixel of A is left of every pixel of B.

Captions (exact grammar; :func:`parse_caption` inverts it)::

    1 object : "a large red circle on a striped background"
    2 objects: "a large red circle left of a small blue triangle on a flat background"
               (relations: left of, right of, above, below)
    3 objects: "a small red circle, a large blue square and a small green triangle from left to right
               on a noisy background"

Splits are defined by *combination* (:data:`HELDOUT_OBJECTS`, :data:`HELDOUT_RELATIONS`,
:data:`HELDOUT_BACKGROUNDS`): a caption is held out iff it contains a held-out (size, colour, shape)
object, a held-out (shape, relation, shape) pair or a held-out (colour, background) pair. Every
single attribute and every pair of attributes inside those triples still occurs in training.
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
SIZES: dict[str, int] = {"small": 2, "large": 3}   # side in cells
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUNDS = ("flat", "gradient", "striped", "checkered", "noisy")
# Grey pairs (dark, light) used by backgrounds; flat uses one of the four greys.
GREY_PAIRS = ((0.22, 0.52), (0.40, 0.72), (0.60, 0.92))
GREYS = (0.25, 0.45, 0.65, 0.88)
OBJECT_COUNT_PROBS = (0.45, 0.40, 0.15)     # default P(1), P(2), P(3 objects)

# --- the held-out split (by combination) -------------------------------------------------------
# One held-out (size, colour, shape) per colour; each (size, shape) pair loses exactly one colour,
# so every pair of attributes is still seen in training.
HELDOUT_OBJECTS = frozenset({
    ("large", "red", "triangle"), ("small", "blue", "circle"), ("large", "green", "square"),
    ("small", "yellow", "triangle"), ("large", "cyan", "circle"), ("small", "purple", "square"),
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


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: Background
    relation: str | None = None    # for 2 objects: relation of objects[0] to objects[1]
    jitter: tuple[tuple[int, int], ...] = ()   # per-object pixel offset at 64 px (scaled with size)

    @property
    def caption(self) -> str:
        bg = f"on a {self.background.kind} background"
        o = self.objects
        if len(o) == 1:
            return f"{o[0].phrase} {bg}"
        if len(o) == 2:
            return f"{o[0].phrase} {self.relation} {o[1].phrase} {bg}"
        return f"{o[0].phrase}, {o[1].phrase} and {o[2].phrase} from left to right {bg}"

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
        objs = {(o.size, o.colour, o.shape) for o in self.objects}
        rels = {(self.objects[i].shape, r, self.objects[j].shape) for i, r, j in self.relations}
        bgs = {(o.colour, self.background) for o in self.objects}
        return {"objects": objs, "relations": rels, "backgrounds": bgs}

    @property
    def heldout(self) -> bool:
        c = self.combos()
        return bool(c["objects"] & HELDOUT_OBJECTS or c["relations"] & HELDOUT_RELATIONS
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


def _intervals_apart(a0: int, a1: int, b0: int, b1: int) -> bool:
    """Interval [a0, a1) entirely before [b0, b1)."""
    return a1 <= b0


def _place(rng: np.random.Generator, sizes: Sequence[int], relation: str | None) -> list[tuple[int, int]] | None:
    """Cell positions (x, y) for objects of the given sizes satisfying the relation (None if none fit)."""
    def options(s: int) -> list[int]:
        return list(range(GRID - s + 1))

    if len(sizes) == 1:
        s = sizes[0]
        return [(int(rng.choice(options(s))), int(rng.choice(options(s))))]
    if len(sizes) == 2:
        sa, sb = sizes
        horizontal = relation in ("left of", "right of")
        first_before = relation in ("left of", "above")
        # positions along the relation axis: (pa, pb) with the intervals apart in the right order
        pairs = [(pa, pb) for pa in options(sa) for pb in options(sb)
                 if (_intervals_apart(pa, pa + sa, pb, pb + sb) if first_before
                     else _intervals_apart(pb, pb + sb, pa, pa + sa))]
        if not pairs:
            return None
        pa, pb = pairs[rng.integers(len(pairs))]
        qa, qb = int(rng.choice(options(sa))), int(rng.choice(options(sb)))
        return [(pa, qa), (pb, qb)] if horizontal else [(qa, pa), (qb, pb)]
    # three in a row, left to right
    xs = [(a, b, c) for a in options(sizes[0]) for b in options(sizes[1]) for c in options(sizes[2])
          if a + sizes[0] <= b and b + sizes[1] <= c]
    if not xs:
        return None
    x = xs[rng.integers(len(xs))]
    return [(x[i], int(rng.choice(options(sizes[i])))) for i in range(3)]


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
        size_names = list(SIZES)
        sizes = [size_names[rng.integers(2)] for _ in range(n)]
        shapes = [SHAPES[rng.integers(len(SHAPES))] for _ in range(n)]
        relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 else None
        pos = _place(rng, [SIZES[s] for s in sizes], relation)
        if pos is None:
            continue
        objs = tuple(Obj(shapes[i], names[colours[i]], sizes[i], *pos[i]) for i in range(n))
        jit = tuple((int(rng.integers(-jitter_px, jitter_px + 1)), int(rng.integers(-jitter_px, jitter_px + 1)))
                    for _ in range(n)) if jitter_px else ()
        scene = Scene(objs, _sample_background(rng), relation, jit)
        held = scene.spec.heldout
        if split == "any" or held == (split == "heldout"):
            return scene
    raise RuntimeError(f"no {split} scene found in {max_tries} tries (n_objects={n_objects})")


def scenes(split: str, count: int, seed: int = 0, **kwargs) -> Iterator[Scene]:
    """``count`` scenes of a split; scene ``i`` is ``sample_scene([seed, i], split)``."""
    for i in range(count):
        yield sample_scene([seed, i], split, **kwargs)


# --- rendering -----------------------------------------------------------------------------------

def _coverage(shape: str, side_px: float, supersample: int) -> np.ndarray:
    """Anti-aliased coverage ``[n, n]`` of a shape filling a box of ``side_px`` (integer) pixels."""
    n = int(round(side_px))
    k = n * supersample
    c = (np.arange(k) + 0.5) / k                # sub-pixel centres in [0, 1]
    y, x = c[:, None], c[None, :]
    if shape == "square":
        m = np.ones((k, k), bool)
    elif shape == "circle":
        m = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    elif shape == "triangle":                   # apex at top centre, base along the bottom
        m = np.abs(x - 0.5) <= y / 2
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m.reshape(n, supersample, n, supersample).mean(axis=(1, 3)).astype(np.float32)


_COVER_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def coverage(shape: str, side_px: int, supersample: int = 4) -> np.ndarray:
    key = (shape, side_px, supersample)
    if key not in _COVER_CACHE:
        _COVER_CACHE[key] = _coverage(shape, side_px, supersample)
    return _COVER_CACHE[key]


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """RGB image ``[size, size, 3]`` float32 in [0, 1] (size a multiple of 8 x 2)."""
    if size % (2 * GRID):
        raise ValueError(f"size must be a multiple of {2 * GRID}; got {size}")
    cell = size // GRID
    img = np.repeat(scene.background.render(size)[:, :, None], 3, axis=2)
    for i, o in enumerate(scene.objects):
        side = o.cells * cell
        cov = coverage(o.shape, side)
        x0, y0 = o.x * cell, o.y * cell
        if scene.jitter:
            dx, dy = scene.jitter[i]
            x0 = int(np.clip(x0 + dx * size // 64, 0, size - side))
            y0 = int(np.clip(y0 + dy * size // 64, 0, size - side))
        region = img[y0:y0 + side, x0:x0 + side]
        colour = np.asarray(COLOURS[o.colour], np.float32)
        region[:] = region * (1 - cov[:, :, None]) + colour * cov[:, :, None]
    return img


def render_batch(batch: Sequence[Scene], size: int = 64) -> np.ndarray:
    """``[B, size, size, 3]`` float32."""
    return np.stack([render(s, size) for s in batch])


def all_captions_vocabulary() -> list[str]:
    """Every word the caption grammar uses (for the tokenizer)."""
    words = {"a", "on", "background", "and", "from", "left", "to", "right", "of", "above", "below", ","}
    words |= set(SHAPES) | set(COLOURS) | set(SIZES) | set(BACKGROUNDS)
    return sorted(words)

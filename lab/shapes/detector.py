"""A deterministic detector for shapes-world images, and caption-faithfulness metrics.

Pipeline (numpy only, any image size that is a multiple of 16):

1. **Colour segmentation.** Background greys have no chroma, object colours are saturated hues
   60 degrees apart: pixels with chroma ``max - min > 0.25`` are labelled with the nearest palette
   hue (within 35 degrees).
2. **Objects.** Per colour, 4-connected components; a component of at least ``MIN_AREA_FRAC`` of a
   small triangle's area is an object (the largest one per colour is matched to the caption, any
   further one is an extra object).
3. **Shape** from the component's bounding box: occupancy of the top and bottom corner patches (20 %
   of the box) and the fill ratio, nearest of the prototypes square (full corners), triangle (empty
   top corners, full bottom corners, half filled) and circle (empty corners, pi/4 filled).
4. **Size**: the longer box side against 2.5 cells (small objects are drawn 1.5 cells wide, large 3.5).
5. **Relations** from box centres (``left of``: centre x of A at least half a cell left of B's).
6. **Background** from the grey half-cell blocks away from objects and their dark tiles: flat (tiny spread), gradient
   (spread but small neighbour steps), striped (steps along one axis only), checkered (steps along
   both axes, none diagonally) or noisy (steps everywhere).

:func:`check` compares one image with a caption; :func:`score` aggregates object recall, per-attribute
accuracy, relation accuracy, background accuracy and whole-caption accuracy (every object found with
the right shape and size, every relation right, the right background, no extra object).
"""
from __future__ import annotations

import colorsys
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .world import COLOURS, GRID, INSET, PLATE, SIZES, CaptionSpec, parse_caption

CHROMA_MIN = 0.25
HUE_TOL = 35.0
MIN_AREA_FRAC = 0.3          # of a small triangle's area
SMALL_SIDE = SIZES["small"] - 2 * INSET      # drawn side of a small object, in cells (1.5)
SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2 - 2 * INSET   # small/large threshold, in cells (2.5)
PLATE_MAX = PLATE + 0.09                     # darker than this: an object's tile, not background
PALETTE_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] * 360.0 for name, rgb in COLOURS.items()}
# (top-corner occupancy, bottom-corner occupancy, fill ratio) prototypes, measured on ground-truth
# renders (tests/test_shapes_world.py re-measures them).
SHAPE_PROTOTYPES = {"square": (1.0, 1.0, 1.0), "circle": (0.06, 0.06, 0.82), "triangle": (0.0, 0.76, 0.53)}


@dataclass
class Detection:
    colour: str
    shape: str
    size: str
    box: tuple[int, int, int, int]       # x0, y0, x1, y1 (exclusive)
    area: int
    features: tuple[float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class Analysis:
    objects: list[Detection]              # the largest component per colour
    extras: list[Detection]               # further components of a colour already seen
    background: str
    background_features: dict = field(default_factory=dict)

    def by_colour(self) -> dict[str, Detection]:
        return {d.colour: d for d in self.objects}


def hue_labels(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` int: palette index per pixel, -1 for grey/unclassified."""
    img = np.clip(image.astype(np.float32), 0, 1)
    mx, mn = img.max(-1), img.min(-1)
    chroma = mx - mn
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.where(chroma > 1e-6, chroma, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    hues = np.array(list(PALETTE_HUES.values()))
    dist = np.abs((h[..., None] - hues + 180.0) % 360.0 - 180.0)
    idx = dist.argmin(-1)
    ok = (chroma > CHROMA_MIN) & (dist.min(-1) <= HUE_TOL)
    return np.where(ok, idx, -1)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an ``[n, 2]`` array of (y, x), largest first."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pts = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pts.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(np.array(pts))
    return sorted(out, key=len, reverse=True)


def shape_features(pts: np.ndarray) -> tuple[tuple[int, int, int, int], tuple[float, float, float]]:
    y0, x0 = pts.min(0)
    y1, x1 = pts.max(0) + 1
    box = np.zeros((y1 - y0, x1 - x0), bool)
    box[pts[:, 0] - y0, pts[:, 1] - x0] = True
    bh, bw = box.shape
    ch, cw = max(1, round(0.2 * bh)), max(1, round(0.2 * bw))
    top = (box[:ch, :cw].mean() + box[:ch, -cw:].mean()) / 2
    bottom = (box[-ch:, :cw].mean() + box[-ch:, -cw:].mean()) / 2
    fill = box.mean()
    return (int(x0), int(y0), int(x1), int(y1)), (float(top), float(bottom), float(fill))


def classify_shape(features: tuple[float, float, float]) -> str:
    f = np.asarray(features)
    return min(SHAPE_PROTOTYPES, key=lambda s: float(((f - np.asarray(SHAPE_PROTOTYPES[s])) ** 2).sum()))


def classify_background(image: np.ndarray, object_mask: np.ndarray) -> tuple[str, dict]:
    size = image.shape[0]
    half = size // (2 * GRID)
    n = 2 * GRID
    grey = image.astype(np.float32).mean(-1)
    # dilate the object mask by a couple of pixels (decoded edges bleed)
    m = object_mask.copy()
    r = max(1, size // 32)
    for _ in range(r):
        m = m | np.roll(m, 1, 0) | np.roll(m, -1, 0) | np.roll(m, 1, 1) | np.roll(m, -1, 1)
    blocks = grey.reshape(n, half, n, half).mean(axis=(1, 3))
    valid = ~m.reshape(n, half, n, half).any(axis=(1, 3))

    def steps(a: np.ndarray, b: np.ndarray, va: np.ndarray, vb: np.ndarray) -> float:
        ok = va & vb
        return float(np.abs(a - b)[ok].mean()) if ok.any() else 0.0

    dh = steps(blocks[:, 1:], blocks[:, :-1], valid[:, 1:], valid[:, :-1])
    dv = steps(blocks[1:, :], blocks[:-1, :], valid[1:, :], valid[:-1, :])
    dd = (steps(blocks[1:, 1:], blocks[:-1, :-1], valid[1:, 1:], valid[:-1, :-1])
          + steps(blocks[1:, :-1], blocks[:-1, 1:], valid[1:, :-1], valid[:-1, 1:])) / 2
    spread = float(blocks[valid].std()) if valid.sum() > 1 else 0.0
    feats = {"spread": round(spread, 4), "dh": round(dh, 4), "dv": round(dv, 4), "dd": round(dd, 4)}
    return texture_kind(dh, dv, dd, spread, step_min=0.08), feats


def texture_kind(dh: float, dv: float, dd: float, spread: float, *, step_min: float) -> str:
    """The background kind from its mean horizontal, vertical and diagonal steps between blocks and its spread:
    no step -> flat or gradient; steps along one axis only -> striped; along both axes but not diagonally ->
    checkered; else noisy."""
    top = max(dh, dv)
    if top < step_min:
        return "flat" if spread < 0.04 else "gradient"
    if min(dh, dv) < 0.3 * top:
        return "striped"
    if dd < 0.3 * min(dh, dv):
        return "checkered"
    return "noisy"


def analyse(image: np.ndarray, *, size_split: float = SIZE_SPLIT,
            background_rule: Callable[[np.ndarray, np.ndarray], tuple[str, dict]] = classify_background) -> Analysis:
    """Detect objects and the background of one ``[H, W, 3]`` image in [0, 1] (small / large split at
    ``size_split`` cells of the longer box side; ``background_rule(image, object_mask)``)."""
    image = np.asarray(image, dtype=np.float32)
    size = image.shape[0]
    cell = size / GRID
    labels = hue_labels(image)
    min_area = MIN_AREA_FRAC * (SMALL_SIDE * cell) ** 2 / 2
    names = list(PALETTE_HUES)
    objects, extras = [], []
    for idx, name in enumerate(names):
        comps = [c for c in components(labels == idx) if len(c) >= min_area]
        for k, pts in enumerate(comps):
            box, feats = shape_features(pts)
            side = max(box[2] - box[0], box[3] - box[1])
            det = Detection(name, classify_shape(feats), "large" if side > size_split * cell else "small", box, len(pts),
                            feats)
            (objects if k == 0 else extras).append(det)
    plate = np.clip(image, 0, 1).max(-1) < PLATE_MAX
    background, bg_feats = background_rule(image, (labels >= 0) | plate)
    return Analysis(objects, extras, background, bg_feats)


def relation_holds(a: Detection, b: Detection, relation: str, cell: float) -> bool:
    (ax, ay), (bx, by) = a.centre, b.centre
    tol = cell / 2
    return {"left of": bx - ax > tol, "right of": ax - bx > tol, "above": by - ay > tol,
            "below": ay - by > tol}[relation]


def check(image: np.ndarray, caption: str | CaptionSpec) -> dict:
    """Per-caption result: objects found / right shape / right size, relations, background, extras."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    return compare(analyse(image), spec, lambda a, b, rel: relation_holds(a, b, rel, image.shape[0] / GRID))


def compare(an: Analysis, spec: CaptionSpec, holds: Callable[[Detection, Detection, str], bool]) -> dict:
    """:func:`check`'s verdict on an analysis, with the world's rule ``holds(a, b, relation)``."""
    found = an.by_colour()
    objs = []
    for o in spec.objects:
        d = found.get(o.colour)
        objs.append({"found": d is not None, "shape": d is not None and d.shape == o.shape,
                     "size": d is not None and d.size == o.size})
    rels = []
    for i, rel, j in spec.relations:
        a, b = found.get(spec.objects[i].colour), found.get(spec.objects[j].colour)
        rels.append(a is not None and b is not None and holds(a, b, rel))
    wanted = {o.colour for o in spec.objects}
    extra = len(an.extras) + sum(1 for d in an.objects if d.colour not in wanted)
    bg = an.background == spec.background
    whole = all(o["found"] and o["shape"] and o["size"] for o in objs) and all(rels) and bg and extra == 0
    return {"objects": objs, "relations": rels, "background": bg, "extra": extra, "whole": whole,
            "n_objects": len(spec.objects)}


def aggregate(results: Sequence[dict]) -> dict:
    """Mean metrics over :func:`check` results (attribute accuracies count a missing object as wrong)."""
    objs = [o for r in results for o in r["objects"]]
    rels = [x for r in results for x in r["relations"]]

    def mean(xs: Iterable) -> float | None:
        xs = list(xs)
        return round(float(np.mean(xs)), 4) if xs else None

    out = {
        "n": len(results),
        "object_recall": mean(o["found"] for o in objs),
        "shape": mean(o["shape"] for o in objs),
        "size": mean(o["size"] for o in objs),
        "relation": mean(rels),
        "background": mean(r["background"] for r in results),
        "no_extra": mean(r["extra"] == 0 for r in results),
        "whole": mean(r["whole"] for r in results),
    }
    for k in (1, 2, 3):
        sub = [r["whole"] for r in results if r["n_objects"] == k]
        out[f"whole_{k}obj"] = mean(sub)
    return out


def score(images: Sequence[np.ndarray], captions: Sequence[str]) -> dict:
    """Aggregate metrics of images against their captions."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    return aggregate([check(im, c) for im, c in zip(images, captions)])

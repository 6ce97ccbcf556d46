"""The detector for world v3 pictures (:mod:`lab.shapes.world_v3`): v2's object reading with v3's rules.

What changes from :mod:`lab.shapes.detector` (everything else — colour segmentation, components,
shape features, the metrics of :func:`lab.shapes.detector.aggregate` — is shared):

* **size**: small tiles are 2 cells (shape drawn 1.5 cells wide), large ones 3 or 4 cells (2.5 or
  3.5), so the split is at 2 cells of the longer box side;
* **relations** follow the world's rule, tiles apart along the axis: "A left of B" holds when A's
  drawn box ends left of where B's starts (the insets leave half a cell between adjacent tiles);
  overlapping or merely off-centre boxes do not count;
* **background** at two scales: textures of half a cell (v2) vary *inside* a cell, textures of a
  whole cell do not. :func:`classify_background` first asks whether the half-cell blocks step inside
  cells; if not, it compares blocks a cell apart instead of neighbours, then applies v2's decision
  (flat / gradient by spread, striped by one axis, checkered when diagonal steps vanish, else noisy).
"""
from __future__ import annotations

import numpy as np

from .detail import dilate
from .detector import Analysis, CaptionSpec, Detection, aggregate, compare, texture_kind
from .detector import analyse as analyse_objects
from .world import GRID, parse_caption

SIZE_SPLIT = 2.0                 # cells: small draws 1.5, large 2.5 or 3.5
STEP_MIN = 0.08                  # a grey step smaller than this is no texture edge (v2's threshold)


def _pairs(grid: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """The two ends of every pair (block, block + (dy, dx)) inside the grid, ``dy >= 0``, as aligned arrays
    indexed by the first block (rows from the top, columns from the left for dx >= 0, else from -dx)."""
    h, w = grid.shape
    if dx >= 0:
        return grid[:h - dy, :w - dx], grid[dy:, dx:]
    return grid[:h - dy, -dx:], grid[dy:, :w + dx]


def _steps(blocks: np.ndarray, valid: np.ndarray, dy: int, dx: int, rows: slice = slice(None),
           cols: slice = slice(None)) -> float:
    """Mean |block - block shifted by (dy, dx)| over pairs of valid blocks, the pairs' first blocks
    restricted to ``rows`` x ``cols``."""
    a, b = _pairs(blocks, dy, dx)
    va, vb = _pairs(valid, dy, dx)
    d, ok = np.abs(a - b)[rows, cols], (va & vb)[rows, cols]
    return float(d[ok].mean()) if ok.any() else 0.0


def classify_background(image: np.ndarray, object_mask: np.ndarray) -> tuple[str, dict]:
    """Background kind of a v3 picture from its grey half-cell blocks away from objects and their tiles."""
    size = image.shape[0]
    half, n = size // (2 * GRID), 2 * GRID
    grey = image.astype(np.float32).mean(-1)
    blocked = dilate(object_mask, max(1, size // 32))            # decoded edges bleed
    blocks = grey.reshape(n, half, n, half).mean(axis=(1, 3))
    valid = ~blocked.reshape(n, half, n, half).any(axis=(1, 3))
    inside = max(_steps(blocks, valid, 0, 1, cols=slice(0, None, 2)), _steps(blocks, valid, 1, 0, rows=slice(0, None, 2)))
    k = 1 if inside >= STEP_MIN else 2                           # texture scale, in half cells
    dh, dv = _steps(blocks, valid, 0, k), _steps(blocks, valid, k, 0)
    dd = (_steps(blocks, valid, k, k) + _steps(blocks, valid, k, -k)) / 2
    spread = float(blocks[valid].std()) if valid.sum() > 1 else 0.0
    feats = {"scale": k, "inside": round(inside, 4), "spread": round(spread, 4), "dh": round(dh, 4),
             "dv": round(dv, 4), "dd": round(dd, 4)}
    return texture_kind(dh, dv, dd, spread, step_min=STEP_MIN), feats


def analyse(image: np.ndarray) -> Analysis:
    """Objects and background of one ``[H, W, 3]`` v3 picture in [0, 1]."""
    return analyse_objects(np.asarray(image, dtype=np.float32), size_split=SIZE_SPLIT,
                           background_rule=classify_background)


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """World v3's rule on drawn boxes ``(x0, y0, x1, y1)``: A's box ends before B's starts along the axis."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    return {"left of": ax1 <= bx0, "right of": bx1 <= ax0, "above": ay1 <= by0, "below": by1 <= ay0}[relation]


def check(image: np.ndarray, caption: str | CaptionSpec) -> dict:
    """Per-caption result as :func:`lab.shapes.detector.check`, under world v3's rules."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    return compare(analyse(image), spec, relation_holds)


def score(images, captions) -> dict:
    """Aggregate metrics of images against their captions (:func:`lab.shapes.detector.aggregate`)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    return aggregate([check(im, c) for im, c in zip(images, captions)])


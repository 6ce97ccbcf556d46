"""World v3's token alphabet, enumerated: every cell patch the world can draw, once each.

World v3 (:mod:`lab.shapes.world_v3`) is grid-aligned, so a cell of any scene is either a piece of an
object tile (a function of shape, colour, tile side and the piece's place in the tile) or a background
cell (a function of the background's kind, greys, direction, texture scale and, for gradients, the
cell's row or column; for noisy backgrounds one of the 16 two-grey patterns of its 2 x 2 half-cell
blocks at half-cell scale, one grey at cell scale). :func:`cell_patches` draws each of those once and
keeps the distinct ones; :func:`exact_codebook` turns them into a :class:`lab.shapes.patchcodes.PatchCodebook`
whose codes *are* those patches (PCA coordinates of the patches as the codebook, the patches as the
decoder's tiles). So ``decode(encode(render(scene))) == render(scene)`` exactly, as long as the PCA
keeps the patches apart (:func:`min_code_distance`, checked when the alphabet is built). The
v2 alphabet is fitted by k-means instead (``lab/scripts/fit_codes.py``) and is the frozen codebook of v2's
neural VQ (``lab/scripts/train_vq.py``); v3 has no neural VQ yet (its evaluations decode by exact tiling).
"""
from __future__ import annotations

from itertools import product

import numpy as np
import torch

from .patchcodes import PatchCodebook, patches
from .world import COLOURS, GREY_PAIRS, GRID, SHAPES
from .world_v3 import BACKGROUNDS, SIDES, Background, Obj, background_variants, tile

#: smallest allowed distance between two codes in PCA space (pixel-L2 units). The closest distinct patches
#: are gradient cells of two grey pairs whose ramps cross (0.021 apart at 64 px, about 1/1000 of a grey
#: level per pixel); exact renders sit at distance 0 from their code, so any margin far above float error
#: keeps nearest-code encoding exact.
MIN_SEPARATION = 0.01


def _tile_patches(cell: int) -> list[np.ndarray]:
    out = []
    for shape, colour, side in product(SHAPES, COLOURS, sorted({s for v in SIDES.values() for s in v})):
        t = tile(Obj(shape, colour, "small", side, 0, 0), cell)
        out += [t[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell].reshape(-1) for y in range(side)
                for x in range(side)]
    return out


def _background_patches(cell: int) -> list[np.ndarray]:
    size = GRID * cell
    out = []
    for kind in BACKGROUNDS:
        for bg in background_variants(kind):
            if kind == "noisy":
                continue
            img = np.repeat(bg.render(size)[:, :, None], 3, axis=2)
            out += list(patches(img[None]))
    # noisy: every two-grey pattern of a cell's 2 x 2 half-cell blocks (cell scale = the uniform ones)
    half = cell // 2
    for a, b in GREY_PAIRS:
        for bits in product((0, 1), repeat=4):
            blocks = np.where(np.array(bits).reshape(2, 2) == 1, b, a).astype(np.float32)
            grey = np.repeat(np.repeat(blocks, half, 0), half, 1)
            out.append(np.repeat(grey[:, :, None], 3, axis=2).reshape(-1))
    return out


def cell_patches(size: int = 64) -> np.ndarray:
    """``[K, cell * cell * 3]`` float32: every distinct cell patch of world v3 at ``size`` px, objects first
    (in a fixed order, so the ids are reproducible)."""
    cell = size // GRID
    rows = np.stack(_tile_patches(cell) + _background_patches(cell)).astype(np.float32)
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def exact_codebook(size: int = 64, dim: int = 32) -> PatchCodebook:
    """A :class:`PatchCodebook` with one code per distinct cell patch of world v3 (see the module doc)."""
    p = torch.from_numpy(cell_patches(size))
    mean = p.mean(0)
    centred = p - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = vh[:dim].contiguous()                  # orthonormal rows: distances are pixel distances
    book = PatchCodebook(mean, comps, (centred @ comps.T).contiguous(), p.clone(), size // GRID)
    sep = min_code_distance(book)
    if sep < MIN_SEPARATION:
        raise ValueError(f"{dim} PCA dims put two of the {book.size} patches {sep:.4f} apart; use more dims")
    return book


def min_code_distance(book: PatchCodebook) -> float:
    """Smallest distance between two distinct codes (the margin of nearest-code encoding)."""
    d = torch.cdist(book.codebook, book.codebook)
    d.fill_diagonal_(float("inf"))
    return float(d.min())


def background_of(bg: Background, size: int = 64) -> np.ndarray:
    """``[GRID * GRID, cell * cell * 3]`` the cell patches of a background alone (for tests and counts)."""
    return patches(np.repeat(bg.render(size)[:, :, None], 3, axis=2)[None])


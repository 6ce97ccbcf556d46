"""Background detail: does a generator over-simplify the backgrounds (smooth away stripes, checks, noise)?

Per image, the **high-frequency energy of the background** is the mean squared 5-point Laplacian of the
grey image (channel mean) over background pixels: pixels that the detector does not take for an object
(palette hue, :func:`lab.shapes.detector.hue_labels`) or an object's dark tile (max channel below
:data:`lab.shapes.detector.PLATE_MAX`), with that object mask dilated by 2 px at 64 px (decoded edges
bleed; as the detector's background classifier) plus 1 px for the Laplacian's support. Per background kind
the benchmark reports generated / real mean energy: 1 = as much detail as real renders, < 1 = over-
simplified, > 1 = added texture. Real ``flat`` and ``gradient`` backgrounds have (almost) no Laplacian
energy, so their ratio is undefined (``None``) and only the energies are reported.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .detector import PLATE_MAX, hue_labels
from .world import BACKGROUNDS

MIN_REAL_ENERGY = 1e-6      # below this the real energy of a kind counts as zero (ratio undefined)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """4-neighbour binary dilation, ``radius`` times (no wrap-around)."""
    m = mask.copy()
    for _ in range(radius):
        grown = m.copy()
        grown[1:] |= m[:-1]
        grown[:-1] |= m[1:]
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        m = grown
    return m


def object_mask(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: object colour or dark object tile (the detector's masks, undilated)."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    return (hue_labels(img) >= 0) | (img.max(-1) < PLATE_MAX)


def background_hf_energy(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image over background pixels (``nan`` when none is left)."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    size = img.shape[0]
    grey = img.mean(-1).astype(np.float64)
    lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    blocked = dilate(object_mask(img), max(1, size // 32) + 1)[1:-1, 1:-1]
    values = lap[~blocked]
    return float((values ** 2).mean()) if values.size else float("nan")


def energy_by_kind(energies: Sequence[float], kinds: Sequence[str]) -> dict[str, float | None]:
    """Mean energy per background kind (``None`` for kinds without a finite value)."""
    e = np.asarray(energies, dtype=np.float64)
    k = np.asarray(kinds)
    out: dict[str, float | None] = {}
    for kind in BACKGROUNDS:
        vals = e[(k == kind) & np.isfinite(e)]
        out[kind] = float(vals.mean()) if vals.size else None
    return out


def hf_ratios(generated: Sequence[float], generated_kinds: Sequence[str], real: Sequence[float],
              real_kinds: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Per background kind: generated and real mean energy and their ratio (``None`` when undefined)."""
    gen, ref = energy_by_kind(generated, generated_kinds), energy_by_kind(real, real_kinds)
    out = {}
    for kind in BACKGROUNDS:
        g, r = gen[kind], ref[kind]
        ratio = g / r if g is not None and r is not None and r > MIN_REAL_ENERGY else None
        out[kind] = {"generated": g, "real": r, "ratio": ratio}
    return out


def mean_ratio(ratios: dict[str, dict[str, float | None]]) -> float | None:
    """Geometric mean of the defined per-kind ratios (the one number of a table row)."""
    vals = [v["ratio"] for v in ratios.values() if v["ratio"] is not None and v["ratio"] > 0]
    return float(np.exp(np.mean(np.log(vals)))) if vals else None

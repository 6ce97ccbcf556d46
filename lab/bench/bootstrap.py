"""Paired bootstrap confidence intervals for the difference of two samplers' per-item scores.

Items are pairs (caption, sampling seed) scored by both samplers. The percentile bootstrap (Efron & Tibshirani
1993) resamples items with replacement ``resamples`` times from a fixed-seed numpy generator and takes the
2.5 / 97.5 percentiles of the mean difference, so the interval is reproducible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: the training-free samplers published after the paper, each compared with Purity and with TCTS+FAS
LATER_SAMPLERS = ("halton", "remdm", "fas-remdm", "entropy-bounded", "noise-regularized")

# (minuend, subtrahend): the differences the benchmark reports when both samplers ran — the poster's
# orderings (RR > Uniform > Purity, TCTS over the baselines, TCTS+FAS over TCTS), TCTS+FAS against the
# best persistent and the plain revocable baseline, and every later sampler against Purity and TCTS+FAS
DEFAULT_COMPARISONS: tuple[tuple[str, str], ...] = (
    ("random-revoke", "uniform"), ("uniform", "purity"), ("tcts", "random-revoke"), ("tcts", "uniform"),
    ("tcts-fas", "tcts"), ("tcts-fas", "purity"), ("tcts-fas", "random-revoke"),
    *((later, base) for later in LATER_SAMPLERS for base in ("purity", "tcts-fas")),
)


@dataclass
class Difference:
    """``mean(a - b)`` over paired items with its percentile-bootstrap interval."""

    a: str
    b: str
    steps: int
    mean: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict:
        return asdict(self)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of ``mean(a - b)`` for paired per-item scores ``a[i]``, ``b[i]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired bootstrap needs two equal-length 1-d score arrays; got {a.shape} and {b.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1; got {resamples}, {level}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for r in range(resamples):           # one row at a time: memory stays O(n) for large n
        means[r] = d[rng.integers(0, len(d), len(d))].mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(low), float(high)

"""Improved precision and recall of a generated set against a real set (Kynkäänniemi et al. 2019,
"Improved Precision and Recall Metric for Assessing Generative Models").

Each set's manifold is the union of balls around its feature vectors whose radius is the distance to that
vector's k-th nearest neighbour in the same set (k = 3 as in the paper). **Precision** is the fraction of
generated samples inside the real manifold (are the images realistic?); **recall** the fraction of real
samples inside the generated manifold (is the variety covered?). Euclidean distances in float64.
"""
from __future__ import annotations

import numpy as np


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def knn_radii(features: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance from each vector to its k-th nearest *other* vector of the same set."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} vectors; got {len(x)}")
    d = _distances(x, x)
    return np.sort(d, axis=1)[:, k]     # column 0 is the vector itself (distance 0)


def coverage_fraction(queries: np.ndarray, support: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> float:
    """Fraction of ``queries`` within ``radii[j]`` of some ``support[j]``."""
    q = np.asarray(queries, dtype=np.float64)
    s = np.asarray(support, dtype=np.float64)
    inside = [(_distances(q[i:i + chunk], s) <= radii[None, :]).any(1) for i in range(0, len(q), chunk)]
    return float(np.concatenate(inside).mean()) if inside else float("nan")


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``generated`` against ``real`` feature sets ``[N, D]``."""
    precision = coverage_fraction(generated, real, knn_radii(real, k))
    recall = coverage_fraction(real, generated, knn_radii(generated, k))
    return precision, recall

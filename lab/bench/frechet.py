"""Fréchet distance between two feature sets, each summarised as a Gaussian (Heusel et al. 2017, "GANs
Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", the FID formula)::

    FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

``tr((S_a S_b)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the symmetric positive
semi-definite ``S_a^(1/2) S_b S_a^(1/2)`` (same spectrum as ``S_a S_b``), in float64, with tiny negative
eigenvalues from round-off clipped to zero, so singular covariances (fewer images than feature dimensions)
work without a matrix square-root routine.
"""
from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, float64) of ``features [N, D]``; N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a [N, D] feature array with N >= 2; got shape {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance of the Gaussians N(mu_a, cov_a) and N(mu_b, cov_b)."""
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets ``[N, D]`` and ``[M, D]``."""
    return frechet_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))

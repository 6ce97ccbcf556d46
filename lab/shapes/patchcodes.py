"""The shapes world's token alphabet: k-means codes over cell-aligned patches.

Objects and background patterns are aligned to the 8 x 8 cell grid, so a token can simply be "which
of K prototype patches does this cell look like". :class:`PatchCodebook` fits that alphabet in
numpy: PCA of the ``cell x cell x 3`` patches to ``dim`` coordinates, then weighted k-means (patches
containing object pixels weigh more, so centroids are spent on objects rather than on background
texture). It gives

* ``encode(images) -> ids`` (nearest centroid in PCA space): the generator's training targets,
  available from the first minute, without a trained neural VQ;
* ``decode(ids) -> images`` by tiling each code's mean patch: a stand-in decoder for early
  evaluation;
* ``codebook`` (``[K, dim]``): the frozen ``quantize.embedding.weight`` of the neural VQ
  (``lab/scripts/train_vq.py``), whose encoder is trained to reproduce these ids and whose decoder
  renders them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .world import GRID


def patches(images: np.ndarray) -> np.ndarray:
    """``[B, S, S, 3]`` -> ``[B * GRID * GRID, cell * cell * 3]`` (row-major cells)."""
    b, s, _, c = images.shape
    cell = s // GRID
    p = images.reshape(b, GRID, cell, GRID, cell, c).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(b * GRID * GRID, cell * cell * c)


def unpatch(p: np.ndarray, batch: int, cell: int) -> np.ndarray:
    x = p.reshape(batch, GRID, GRID, cell, cell, 3).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, GRID * cell, GRID * cell, 3)


def object_patch_weight(p: np.ndarray, weight: float) -> np.ndarray:
    """Weight per patch: ``weight`` if it has any saturated (object) pixel, else 1."""
    px = p.reshape(p.shape[0], -1, 3)
    chroma = px.max(-1) - px.min(-1)
    return np.where((chroma > 0.2).any(-1), weight, 1.0).astype(np.float32)


@dataclass
class PatchCodebook:
    mean: torch.Tensor          # [P]
    components: torch.Tensor    # [dim, P] (rows: principal directions, scaled)
    codebook: torch.Tensor      # [K, dim]
    code_patches: torch.Tensor  # [K, P] mean pixel patch per code
    cell: int

    @property
    def size(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def dim(self) -> int:
        return int(self.codebook.shape[1])

    def project(self, p: np.ndarray | torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(p, dtype=torch.float32)
        return (p - self.mean) @ self.components.T

    def encode(self, images: np.ndarray) -> torch.Tensor:
        """``[B, S, S, 3]`` float images -> ``[B, GRID, GRID]`` int64 ids."""
        z = self.project(patches(images))
        ids = torch.cdist(z, self.codebook).argmin(1)
        return ids.view(images.shape[0], GRID, GRID)

    def latents(self, images: np.ndarray) -> torch.Tensor:
        """``[B, dim, GRID, GRID]`` PCA coordinates of every cell."""
        z = self.project(patches(images))
        return z.view(images.shape[0], GRID, GRID, -1).permute(0, 3, 1, 2).contiguous()

    def decode(self, ids: torch.Tensor) -> np.ndarray:
        """``[B, GRID, GRID]`` ids -> ``[B, S, S, 3]`` images tiled from the code patches."""
        p = self.code_patches[ids.reshape(-1)].numpy()
        return unpatch(p, ids.shape[0], self.cell)

    @classmethod
    def fit(cls, images: np.ndarray, size: int = 1024, dim: int = 32, object_weight: float = 6.0,
            iters: int = 20, seed: int = 0, log=print) -> "PatchCodebook":
        cell = images.shape[1] // GRID
        p = torch.from_numpy(patches(images).astype(np.float32))
        w = torch.from_numpy(object_patch_weight(p.numpy(), object_weight))
        mean = (p * w[:, None]).sum(0) / w.sum()
        centred = (p - mean) * w.sqrt()[:, None]
        # PCA from a subsample's covariance
        g = torch.Generator().manual_seed(seed)
        sub = centred[torch.randperm(p.shape[0], generator=g)[:200_000]]
        cov = sub.T @ sub / sub.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)
        evals, evecs = evals[order], evecs[:, order]
        log(f"PCA: {dim} of {p.shape[1]} dims keep {float(evals[:dim].sum() / evals.sum()):.4f} of the variance")
        comps = evecs[:, :dim].T.contiguous()           # orthonormal rows: distances are pixel distances
        z = (p - mean) @ comps.T
        # weighted k-means (init: weighted sample)
        init = torch.multinomial(w, size, replacement=False, generator=g)
        centres = z[init].clone()
        for it in range(iters):
            ids = torch.cat([torch.cdist(z[i:i + 65536], centres).argmin(1) for i in range(0, z.shape[0], 65536)])
            wsum = torch.zeros(size).index_add_(0, ids, w)
            sums = torch.zeros_like(centres).index_add_(0, ids, z * w[:, None])
            empty = wsum == 0
            centres = sums / wsum.clamp(min=1e-8)[:, None]
            if empty.any():  # re-seed empty clusters at the worst-fitted points
                err = ((z - centres[ids]) ** 2).sum(1) * w
                centres[empty] = z[err.topk(int(empty.sum())).indices]
            if it % 5 == 4 or it == iters - 1:
                mse = float((((z - centres[ids]) ** 2).sum(1) * w).sum() / w.sum() / p.shape[1])
                log(f"k-means iter {it + 1}: weighted latent mse/px {mse:.5f}, empty {int(empty.sum())}")
        ids = torch.cat([torch.cdist(z[i:i + 65536], centres).argmin(1) for i in range(0, z.shape[0], 65536)])
        counts = torch.bincount(ids, minlength=size).float()
        code_patches = torch.zeros(size, p.shape[1]).index_add_(0, ids, p) / counts.clamp(min=1)[:, None]
        unused = counts == 0
        code_patches[unused] = (mean + centres[unused] @ comps)
        return cls(mean, comps, centres.contiguous(), code_patches.clamp(0, 1), cell)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean, "components": self.components, "codebook": self.codebook,
                   "code_patches": self.code_patches}, str(path), metadata={"cell": str(self.cell)})

    @classmethod
    def load(cls, path: Path) -> "PatchCodebook":
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            cell = int(json.loads(f.metadata()["cell"]))
        return cls(t["mean"], t["components"], t["codebook"], t["code_patches"], cell)

"""Scored units of the shapes benchmark (one sampler x step count x sampling seed) and their on-disk cache.

A unit keeps what the tables need, not the images: the detector's per-caption results, the feature
vectors, the background HF energies and the wall times. Units are cached as ``.npz`` (no pickle) under a
key that hashes everything that determines them (model, selector and feature-net files, captions, cfg,
options, steps, seed), so an interrupted benchmark resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tcts.atomic import atomic_write
from ..shapes.detail import background_hf_energy
from ..shapes.detector import check
from ..shapes.features import FeatureNet, extract_features


@dataclass
class Unit:
    checks: list[dict]            # lab.shapes.detector.check per image
    features: np.ndarray          # [N, D] float64
    hf: np.ndarray                # [N] background HF energy
    sample_seconds: float = 0.0   # wall clock
    decode_seconds: float = 0.0   # wall clock
    cpu_seconds: float = 0.0      # process CPU time of sampling + decoding
    passes: np.ndarray | None = None  # [N] model passes each image needed (fewer than the steps when a rule ends early)

    @property
    def whole(self) -> np.ndarray:
        return np.array([bool(c["whole"]) for c in self.checks])


def score_images(images: np.ndarray, captions: Sequence[str], net: FeatureNet, *, sample_seconds: float = 0.0,
                 decode_seconds: float = 0.0, cpu_seconds: float = 0.0, passes: np.ndarray | None = None) -> Unit:
    """Detector results, features and background HF energy of images ``[N, H, W, 3]`` for their captions."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    checks = [check(im, c) for im, c in zip(images, captions)]
    hf = np.array([background_hf_energy(im) for im in images], dtype=np.float64)
    return Unit(checks, extract_features(net, images), hf, sample_seconds, decode_seconds, cpu_seconds, passes)


def merge(units: Sequence[Unit]) -> Unit:
    """Units of several seeds as one (seed-major order)."""
    passes = None if any(u.passes is None for u in units) else np.concatenate([u.passes for u in units])
    return Unit([c for u in units for c in u.checks], np.concatenate([u.features for u in units]),
                np.concatenate([u.hf for u in units]), sum(u.sample_seconds for u in units),
                sum(u.decode_seconds for u in units), sum(u.cpu_seconds for u in units), passes)


def folder_fingerprint(path: Path | None) -> list:
    """(relative name, size, mtime) of the weight and config files of a folder: cheap change detection."""
    if path is None or not Path(path).exists():
        return []
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".txt"))
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def unit_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_unit(unit: Unit, path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(
        tmp, key=np.array(key), checks=np.array(json.dumps(unit.checks)), features=unit.features, hf=unit.hf,
        seconds=np.array([unit.sample_seconds, unit.decode_seconds, unit.cpu_seconds]),
        passes=np.array([] if unit.passes is None else unit.passes, dtype=np.int64)), suffix=".npz")


def load_unit(path: Path, key: str) -> Unit | None:
    """The cached unit at ``path`` when its key matches, else ``None`` (unreadable files count as absent)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            seconds = data["seconds"]
            passes = data["passes"] if "passes" in data.files and data["passes"].size else None
            return Unit(json.loads(str(data["checks"])), data["features"].astype(np.float64),
                        data["hf"].astype(np.float64), *(float(x) for x in seconds[:3]), passes)
    except (OSError, ValueError, KeyError):
        return None

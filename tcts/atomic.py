"""Atomic file writes: write a hidden sibling temp file, then rename it over the target, so a reader (or a
crash) never sees a half-written output."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None], *, suffix: str = "") -> Path:
    """Call ``write(tmp)`` on ``.<name>.tmp<suffix>`` beside ``path``, then move it to ``path``.

    ``suffix`` keeps writers that append their own extension (``np.save`` → ``.npy``, ``np.savez`` → ``.npz``)
    writing to exactly the temp name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

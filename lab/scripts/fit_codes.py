"""Fit the shapes world's token alphabet (k-means over cell-aligned patches; see lab/shapes/patchcodes.py).

Exact command (under a minute: the world has only ~310 distinct cell patches)::

    nice -n 19 .venv/bin/python lab/scripts/fit_codes.py

Writes ``/root/.cache/tcts-train/shapes/codes.safetensors`` (PCA mean/components, the 1024 x 32
codebook, the mean patch of every code) and prints the tiled-decode PSNR on train and held-out renders.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.shapes.checkpointing import DEFAULT_ROOT  # noqa: E402
from lab.shapes.patchcodes import PatchCodebook  # noqa: E402
from lab.shapes.world import render_batch, sample_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=DEFAULT_ROOT / "shapes" / "codes.safetensors")
    ap.add_argument("--scenes", type=int, default=5000)
    ap.add_argument("--codes", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t = time.time()
    imgs = render_batch([sample_scene([500, i], "any") for i in range(args.scenes)], args.size)
    print(f"rendered {len(imgs)} scenes in {time.time() - t:.1f}s", flush=True)
    book = PatchCodebook.fit(imgs, size=args.codes, dim=args.dim, iters=args.iters,
                             log=lambda m: print(f"[{time.time() - t:.0f}s] {m}", flush=True))
    book.save(args.out)
    for split in ("train", "heldout"):
        x = render_batch([sample_scene([7, i], split) for i in range(256)], args.size)
        y = book.decode(book.encode(x))
        psnr = 10 * np.log10(1 / np.mean((x - y) ** 2))
        print(f"{split}: tiled-decode psnr {psnr:.2f} dB, codes used {int(book.encode(x).unique().numel())}",
              flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Build world v3's token alphabet: one code per distinct cell patch (lab/shapes/alphabet_v3.py).

Exact command (seconds; no fitting: the world is enumerated)::

    nice -n 10 .venv/bin/python lab/scripts/build_alphabet_v3.py

Writes ``<TCTS_TRAIN_DIR or /root/.cache/tcts-train>/shapes-v3/codes.safetensors`` (the same format as the
v2 k-means codes of ``fit_codes.py``; ``train_generator.py --world v3`` reads it; no neural VQ speaks it yet:
``train_vq.py`` renders world v2) and prints the
number of codes, the smallest distance between two codes and the round trip on train and held-out renders:
the share of renders that ``decode(encode(x))`` gives back exactly, and of cells re-encoded to the same id.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.shapes.alphabet_v3 import exact_codebook, min_code_distance  # noqa: E402
from lab.shapes.checkpointing import DEFAULT_ROOT  # noqa: E402
from lab.shapes.world_v3 import render_batch, sample_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_ROOT / "shapes-v3" / "codes.safetensors")
    ap.add_argument("--dim", type=int, default=32, help="PCA dims of the codes (= the VQ's latent channels)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("-n", type=int, default=1000, help="renders per split for the round trip")
    args = ap.parse_args()
    book = exact_codebook(args.size, args.dim)
    book.save(args.out)
    print(json.dumps({"codes": book.size, "dim": book.dim, "min_code_distance": round(min_code_distance(book), 4)}))
    for split in ("train", "heldout"):
        x = render_batch([sample_scene([7, i], split) for i in range(args.n)], args.size)
        ids = book.encode(x)
        y = book.decode(ids)
        exact = float(np.mean([np.array_equal(a, b) for a, b in zip(x, y)]))
        print(json.dumps({"split": split, "renders": args.n, "exact_round_trip": exact,
                          "ids_stable": float((book.encode(y) == ids).float().mean()),
                          "codes_used": int(ids.unique().numel())}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

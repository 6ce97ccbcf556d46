"""World v3's ambiguity and its tokenizer's exactness, measured (``docs/shapes-world.md``, "World v3").

Exact command (about half a minute on one core)::

    nice -n 10 .venv/bin/python -m lab.scripts.world_v3_stats            # or: python lab/scripts/world_v3_stats.py

Prints one JSON object:

* ``alphabet``: the number of codes of the enumerated alphabet (:func:`lab.shapes.alphabet_v3.exact_codebook`)
  and the smallest distance between two codes;
* ``round_trip``: on ``--renders`` train and held-out renders, the share given back pixel-exactly by
  ``decode(encode(x))``, and the share of tokens that re-encode to the same id;
* ``layouts``: over the ``--captions`` fixed held-out evaluation captions of world v3
  (:func:`lab.shapes.evaluate.eval_captions`) and as many training captions, the number of distinct token
  layouts each caption allows, counted by enumeration: object layouts (tile sides x valid positions,
  :func:`lab.shapes.world_v3.layouts`) times distinct background token grids of the caption's kind
  (:func:`background_layouts`; a noisy background counts one grid per (greys, scale), so its figure is a
  lower bound: the noise pattern multiplies it further). Mean, median and minimum per caption;
* ``sampled``: a direct count. For the first ``--sampled-captions`` held-out captions, ``--draws`` scenes
  each (:func:`lab.shapes.world_v3.scene_from_caption`, seeds 0..draws-1) are rendered and tokenized, and
  the distinct token grids are counted (at most ``--draws`` per caption).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.shapes.alphabet_v3 import exact_codebook, min_code_distance  # noqa: E402
from lab.shapes.evaluate import eval_captions  # noqa: E402
from lab.shapes.patchcodes import PatchCodebook  # noqa: E402
from lab.shapes.world import parse_caption  # noqa: E402
from lab.shapes.world_v3 import background_variants, layouts, render_batch, sample_scene, scene_from_caption  # noqa: E402


@lru_cache(maxsize=None)
def background_layouts(kind: str, size: int = 64) -> int:
    """Distinct token grids of the backgrounds of one kind, one noise pattern per noisy variant (exact tiling:
    distinct pixel grids are distinct token grids)."""
    grids = {np.repeat(bg.render(size)[:, :, None], 3, axis=2).tobytes() for bg in background_variants(kind)}
    return len(grids)


def caption_layouts(caption: str) -> tuple[int, int]:
    """``(object layouts, object layouts x background token grids)`` a caption of world v3 allows."""
    spec = parse_caption(caption)
    n_obj = len(layouts(spec))
    return n_obj, n_obj * background_layouts(spec.background)


def summary(values: Sequence[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 1), "median": float(statistics.median(values)),
            "min": int(min(values)), "max": int(max(values))}


def round_trip(book: PatchCodebook, split: str, n: int, seed: int = 7) -> dict:
    """Exact round trip of ``n`` renders of a split through the alphabet."""
    x = render_batch([sample_scene([seed, i], split) for i in range(n)])
    ids = book.encode(x)
    y = book.decode(ids)
    return {"split": split, "renders": n, "exact_images": float(np.mean([np.array_equal(a, b) for a, b in zip(x, y)])),
            "same_ids": float((book.encode(y) == ids).float().mean()), "codes_used": int(ids.unique().numel())}


def sampled_layouts(book: PatchCodebook, caption: str, draws: int) -> int:
    """Distinct token grids among ``draws`` scenes drawn for one caption."""
    ids = book.encode(render_batch([scene_from_caption(caption, seed=s) for s in range(draws)]))
    return len({g.numpy().tobytes() for g in ids})


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captions", type=int, default=1000, help="held-out (and as many train) captions to count")
    ap.add_argument("--renders", type=int, default=1000, help="renders per split for the round trip")
    ap.add_argument("--sampled-captions", type=int, default=100)
    ap.add_argument("--draws", type=int, default=100, help="scenes drawn per caption for the direct count")
    args = ap.parse_args(argv)
    book = exact_codebook()
    out: dict = {"alphabet": {"codes": book.size, "min_code_distance": round(min_code_distance(book), 4)},
                 "round_trip": [round_trip(book, split, args.renders) for split in ("train", "heldout")],
                 "layouts": {}}
    for split in ("heldout", "train"):
        counts = [caption_layouts(c) for c in eval_captions(args.captions, split, world="v3")]
        out["layouts"][split] = {"captions": len(counts), "objects": summary([c[0] for c in counts]),
                                 "objects_x_backgrounds": summary([c[1] for c in counts])}
    held = eval_captions(args.sampled_captions, "heldout", world="v3")
    out["sampled"] = {"captions": len(held), "draws": args.draws,
                      "distinct": summary([sampled_layouts(book, c, args.draws) for c in held])}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

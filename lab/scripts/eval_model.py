"""Score an exported shapes model folder with the detector (held-out captions, several samplers).

Exact command (about 1–3 min per sampler x cfg x seed on a busy 2-core CPU)::

    nice -n 19 .venv/bin/python lab/scripts/eval_model.py models/shapes-demo \
        --captions 200 --seeds 0 1 --samplers uniform purity random-revoke --cfg 3 \
        --json /root/.cache/tcts-train/shapes/eval-demo.json --grid /root/.cache/tcts-train/shapes/eval-demo.png

Generation goes through the engine exactly as users run it (``Pipeline.from_folder`` components,
the one sampling loop, negative prompt ``""``, 12 steps). Prints one JSON line per setting with the
detector's object recall, shape/size/relation/background accuracy and whole-caption accuracy, plus a
paired bootstrap of whole-caption accuracy of every sampler against the first one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tcts.pipeline import Pipeline, decode_tokens  # noqa: E402
from lab.shapes.detector import aggregate  # noqa: E402
from tcts.sampling.registry import make_rule  # noqa: E402
from tcts.settings import Sampling  # noqa: E402
from lab.shapes.evaluate import eval_captions, generate  # noqa: E402
from lab.shapes.worlds import get_world, world_of_folder  # noqa: E402


def bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a with a 95 % paired-bootstrap interval."""
    rng = np.random.default_rng(seed)
    d = b.astype(float) - a.astype(float)
    idx = rng.integers(0, len(d), (n, len(d)))
    boots = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--captions", type=int, default=200)
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--samplers", nargs="+", default=["uniform", "purity", "random-revoke"])
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None, help="save a PNG of the first 16 images per sampler")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_folder(args.folder)
    world = world_of_folder(args.folder)        # training.json's "world" (v2 when absent)
    check = get_world(world).check
    captions = eval_captions(args.captions, args.split, world=world)

    def encode(prompts):
        c = pipe.encode_prompts(prompts)
        return c.hidden_states, c.pooled

    records, wholes, grids = [], {}, []
    for cfg in args.cfg:
        for sampler in args.samplers:
            results = []
            t = time.time()
            for seed in args.seeds:
                tokens = generate(pipe.transformer, encode, captions, make_rule(sampler),
                                  Sampling(steps=args.steps, cfg=cfg), seed=1000 * seed)
                images = decode_tokens(pipe.vq, tokens).numpy()
                results += [check(im, c) for im, c in zip(images, captions)]
                if seed == args.seeds[0]:
                    grids.append(images[:16])
            rec = {"folder": str(args.folder), "world": world, "split": args.split, "sampler": sampler, "cfg": cfg,
                   "steps": args.steps, "seeds": args.seeds, **aggregate(results), "seconds": round(time.time() - t, 1)}
            wholes[(cfg, sampler)] = np.array([r["whole"] for r in results])
            records.append(rec)
            print(json.dumps(rec), flush=True)
    for cfg in args.cfg:
        base = args.samplers[0]
        for sampler in args.samplers[1:]:
            m, lo, hi = bootstrap(wholes[(cfg, base)], wholes[(cfg, sampler)])
            line = {"cfg": cfg, "compare": f"{sampler} - {base}", "whole_diff": round(m, 4),
                    "ci95": [round(lo, 4), round(hi, 4)]}
            records.append(line)
            print(json.dumps(line), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    if args.grid:
        from PIL import Image

        rows = [np.concatenate(list(g), axis=1) for g in grids]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        Image.fromarray((np.concatenate(rows, 0) * 255).astype(np.uint8)).save(args.grid)


if __name__ == "__main__":
    main()

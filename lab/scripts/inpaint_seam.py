"""Where an inpainting seam comes from: the model, the start tokens or the schedule (issue: the repainted flat
background came out another grey than the picture around it).

Exact command (a few minutes on one CPU core)::

    .venv/bin/python lab/scripts/inpaint_seam.py [--backgrounds flat] [--scenes 40]

On one-object scenes (a small object in the centre) of the given background kinds, the real render goes
through the VQ and a 3x3-cell corner of pure background is inpainted with the scene's own caption. The loop
is varied one part at a time: the reference's order (``purity``, linear schedule over the region), a cosine
schedule, a revocable sampler, one token per step (the region's 9 tokens in 9 steps: every token sees all
tokens drawn before it), and guidance scales 1 and 5. Printed per variant: the seam (mean intensity step
across the region's border, inpainted minus source; ``lab.bench.edit.seam_step``), the mean grey
difference inside the region and the share of pictures where it exceeds 0.1.

If the seam stays the same under every variant, the start and the schedule are not its cause: the
generator does not carry the visible background's grey level into the masked tokens (for a flat background
that grey is not in the caption, so only the context can tell it). Our inpaint start and schedule equal the
reference pipeline's token for token (tests/test_e2e_parity.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.bench.edit import seam_step  # noqa: E402
from lab.shapes.world import BACKGROUNDS, render_batch, sample_scene  # noqa: E402
from tcts.engine import Job, micro_conditions, run  # noqa: E402
from tcts.pipeline import Pipeline, decode_tokens, encode_images  # noqa: E402
from tcts.sampling.registry import make_rule  # noqa: E402
from tcts.sampling.step import Conditioning  # noqa: E402
from tcts.settings import Sampling  # noqa: E402
from tcts.starts import EncodedImage, Inpaint  # noqa: E402

SEED = 555
#: (name, rule, steps, schedule, cfg): the loop varied one part at a time
VARIANTS = (("purity, linear, 16 steps (the reference)", "purity", 16, "linear", 2.0),
            ("purity, cosine, 16 steps", "purity", 16, "cosine", 2.0),
            ("random-revoke, linear, 16 steps", "random-revoke", 16, "linear", 2.0),
            ("purity, linear, 9 steps (one token a step)", "purity", 9, "linear", 2.0),
            ("purity, linear, 16 steps, cfg 1 (no guidance)", "purity", 16, "linear", 1.0),
            ("purity, linear, 16 steps, cfg 5", "purity", 16, "linear", 5.0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[2] / "models" / "shapes-demo")
    p.add_argument("--backgrounds", nargs="+", default=["flat"], choices=BACKGROUNDS)
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_folder(args.model)
    scenes, i = [], 0
    while len(scenes) < args.scenes:
        scene = sample_scene([SEED, i], "any", n_objects=1)
        i += 1
        if scene.background.kind in args.backgrounds and scene.objects[0].size == "small":
            scenes.append(scene)
    n = len(scenes)
    tokens = encode_images(pipe.vq, torch.from_numpy(render_batch(scenes, 64)))
    source = decode_tokens(pipe.vq, tokens).float().numpy()
    region = torch.zeros(n, 8, 8, dtype=torch.bool)
    region[:, 0:3, 0:3] = True                      # background only: the small object's tile is cells 3-4
    inside = np.kron(region[0].numpy(), np.ones((8, 8), bool))
    text, negative = pipe.encode_prompts([s.caption for s in scenes]), pipe.encode_prompts([""])
    cond = Conditioning(text.hidden_states, text.pooled, micro_conditions(64, 64, n),
                        negative.hidden_states.expand(n, -1, -1), negative.pooled.expand(n, -1))
    print(f"{n} scenes, backgrounds {', '.join(args.backgrounds)}")
    for name, rule, steps, schedule, cfg in VARIANTS:
        sampling = pipe.resolve(Sampling(steps=steps, schedule=schedule, cfg=cfg)).sampling
        job = Job(condition=cond, sampling=sampling, rule=make_rule(rule),
                  start=Inpaint(EncodedImage(tokens, 64, 64), region), seed=list(range(n)))
        out = decode_tokens(pipe.vq, run(pipe.transformer, job, pipe.vq_factor)).float().numpy()
        seams = [seam_step(o, r.numpy()) - seam_step(s, r.numpy()) for o, s, r in zip(out, source, region)]
        level = np.array([abs(o[inside].mean() - s[inside].mean()) for o, s in zip(out, source)])
        print(f"{name:48s} seam {np.mean(seams):+.3f}   |grey inside - source| {level.mean():.3f}   "
              f"> 0.1 in {100 * (level > 0.1).mean():.0f} %", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

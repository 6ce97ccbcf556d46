"""Generate images for shapes-world captions and score them with the detector.

Used by the training log (``lab/scripts/train_generator.py``) and by ``lab/scripts/eval_model.py``
for an exported folder. Captions are the fixed held-out evaluation set ``eval_captions(n)``:
``sample_scene([EVAL_SEED, i], "heldout")`` for ``i < n`` (the world's default object-count mix) of
the world named by ``world`` (:mod:`lab.shapes.worlds`; v2 unless told).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tcts.engine import Job, run
from tcts.sampling.registry import make_rule
from tcts.sampling.rules import Rule
from tcts.sampling.step import Conditioning
from tcts.settings import REFERENCE, Sampling
from tcts.starts import TextToImage
from .worlds import DEFAULT_WORLD, get_world

EVAL_SEED = 99
SIZE = 64


def eval_captions(n: int = 100, split: str = "heldout", seed: int = EVAL_SEED, world: str = DEFAULT_WORLD) -> list[str]:
    sample_scene = get_world(world).sample_scene
    return [sample_scene([seed, i], split).caption for i in range(n)]


def micro_conds(batch: int, size: int = SIZE) -> torch.Tensor:
    return torch.tensor([[size, size, 0, 0, 6]], dtype=torch.float32).expand(batch, -1)


@torch.inference_mode()
def generate(gen: torch.nn.Module, encode: Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]],
             captions: Sequence[str], rule: Rule, sampling: Sampling, *, seed: int = 0, batch: int = 50) -> torch.Tensor:
    """Token grids ``[N, 8, 8]`` for the captions (64 px, 8 px tokens); image ``i`` uses the CPU generator
    seeded ``seed + i``; ``sampling`` is completed with the reference defaults."""
    sampling = Sampling(**{k: v if v is not None else getattr(REFERENCE, k) for k, v in sampling.__dict__.items()})
    out = []
    neg_h, neg_p = encode([""])
    for start in range(0, len(captions), batch):
        chunk = list(captions[start:start + batch])
        b = len(chunk)
        h, p = encode(chunk)
        cond = Conditioning(h, p, micro_conds(b), neg_h.expand(b, -1, -1), neg_p.expand(b, -1))
        job = Job(condition=cond, sampling=sampling, rule=rule, start=TextToImage(SIZE, SIZE),
                  seed=[seed + start + i for i in range(b)])
        out.append(run(gen, job, SIZE // 8))
    return torch.cat(out)


def decoder_for(codes, vq_folder: Path | None) -> tuple[Callable[[torch.Tensor], np.ndarray], str]:
    """The neural VQ decoder when ``vq_folder`` holds a trained one, else the patch-tiling decoder."""
    if vq_folder is not None and (Path(vq_folder) / "config.json").is_file():
        from tcts.checkpoints import load_vq

        vq = load_vq(vq_folder)
        return (lambda ids: vq.decode_ids(ids).clamp(0, 1).permute(0, 2, 3, 1).numpy()), "vq"
    return codes.decode, "patch-tiles"


@dataclass
class Evaluation:
    """How :func:`evaluate_models` samples and which captions it scores."""

    sampler: str = "uniform"
    n_captions: int = 100
    cfg: float = 3.0
    steps: int = 12
    seed: int = 0
    vq_folder: Path | None = None
    split: str = "heldout"
    world: str = DEFAULT_WORLD


def evaluate_models(gen, text_model, tokenizer, codes, evaluation: Evaluation) -> dict:
    """Detector metrics of ``gen`` (+ its text encoder) on the fixed evaluation captions."""
    e = evaluation
    was_training = gen.training, text_model.training
    gen.eval()
    text_model.eval()

    def encode(prompts):
        ids = torch.tensor([tokenizer(p) for p in prompts])
        out = text_model(ids, output_hidden_states=True, return_dict=True)
        return out.hidden_states[-2], out.text_embeds

    try:
        captions = eval_captions(e.n_captions, e.split, world=e.world)
        tokens = generate(gen, encode, captions, make_rule(e.sampler), Sampling(steps=e.steps, cfg=e.cfg), seed=e.seed)
        decode, kind = decoder_for(codes, e.vq_folder)
        metrics = get_world(e.world).score(decode(tokens), captions)
    finally:
        gen.train(was_training[0])
        text_model.train(was_training[1])
    return {"cfg": e.cfg, "steps": e.steps, "decoder": kind, **metrics}

"""The one way in: every generation (text to image, img2img, inpaint, a mask-free edit's regeneration) is a
:class:`Job` run by :func:`run`. ``Pipeline``, the CLI, the ComfyUI nodes and the benchmark build jobs; none
of them prepares a start or calls the loop itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .sampling.loop import Draws, StepReport, sample
from .sampling.rules import Rule
from .sampling.step import Conditioning
from .settings import Sampling
from .starts import Start, prepare, size_of
from .text import TextCondition

AESTHETIC_SCORE = 6


@dataclass
class Job:
    """One sampling run: the prompt's condition (one row per image), complete sampling settings, where it
    starts, the rule, the seed (image i uses seed + i) and an optional per-step callback."""

    condition: Conditioning
    sampling: Sampling
    rule: Rule
    start: Start | None = None          # None only where the caller fills it in (a mask-free edit's region)
    seed: int | Sequence[int] = 0       # image i uses seed + i, or its own seed from a list
    callback: Callable[[StepReport], None] | None = None


#: devices on which the reference's CPU draws are made ahead on worker threads while the model runs
#: (``sampling/draw_ahead.py``): every device apart from the CPU, whose cores the forward pass already uses
DRAW_AHEAD_DEVICE_TYPES = frozenset({"cuda", "xpu", "mps"})


def make_generators(seed: int | Sequence[int], batch: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per image (CPU unless ``device`` says otherwise): image ``i`` of a batch uses seed
    ``seed + i`` (so a batch of 2 with seed s gives the same tokens as two single runs with seeds s and s + 1),
    or ``seed[i]`` when given a list (benchmarks pin every image's stream)."""
    seeds = [int(seed) + i for i in range(batch)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for {batch} images")
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def micro_conditions(width: int, height: int, batch: int) -> torch.Tensor:
    """``[B, 5]`` micro-conditions ``[width, height, crop_x, crop_y, aesthetic]`` (width first, as the
    reference pipelines and the original training code; no crop, aesthetic score 6)."""
    return torch.tensor([[width, height, 0, 0, AESTHETIC_SCORE]], dtype=torch.float32).expand(batch, -1)


def condition(positive: TextCondition, negative: TextCondition | None, start: Start, batch: int) -> Conditioning:
    """A prompt (and optional negative prompt) repeated to the batch, with the start's micro-conditions."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] == batch:
            return t
        if t.shape[0] == 1:
            return t.expand(batch, *t.shape[1:])
        raise ValueError(f"text condition has batch {t.shape[0]}; expected 1 or {batch}")
    width, height = size_of(start)
    return Conditioning(
        hidden_states=rows(positive.hidden_states), pooled=rows(positive.pooled),
        micro_conds=micro_conditions(width, height, batch),
        negative_hidden_states=None if negative is None else rows(negative.hidden_states),
        negative_pooled=None if negative is None else rows(negative.pooled))


@torch.inference_mode()
def run(model: nn.Module, job: Job, vq_factor: int) -> torch.Tensor:
    """Sample the job's token grids ``[B, h, w]``. Every random draw comes from per-image CPU generators in
    the reference's order (on a GPU drawn ahead while the model runs, with the same tokens); with
    ``sampling.draw_on_device`` on a GPU the proposals are drawn there instead."""
    if job.start is None:
        raise ValueError("the job has no start (TextToImage, ImageToImage, Inpaint or Edit)")
    batch = job.condition.batch_size
    generators = make_generators(job.seed, batch)
    device = next(model.parameters()).device
    on_device = bool(job.sampling.draw_on_device) and device.type != "cpu"
    draws = Draws(generators, make_generators(job.seed, batch, device) if on_device else None,
                  ahead=not on_device and device.type in DRAW_AHEAD_DEVICE_TYPES)
    loop_start = prepare(job.start, model, vq_factor, job.sampling, batch, generators)
    return sample(model, job.condition, job.rule, job.sampling, loop_start, draws, job.callback)

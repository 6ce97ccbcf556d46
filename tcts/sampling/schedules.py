"""Mask schedules: how many tokens stay masked after each step.

The arithmetic deliberately mirrors diffusers ``schedulers/scheduling_amused.py`` (AmusedScheduler.step
and add_noise): float32 tensors, ``floor``, then the clamp to ``[1, maskable - 1]``, so that counts are
identical to the reference for every step.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "arccos", "square")


def mask_ratio(schedule: str, step: int, steps: int) -> torch.Tensor:
    """Fraction of tokens still masked after ``step`` (0-based) of ``steps`` (float32 scalar tensor).

    cosine ``cos(pi/2 * r)`` (MaskGIT, aMUSEd default), linear ``1 - r`` (aMUSEd inpaint),
    arccos ``arccos(r) / (pi/2)`` (Muse-style, unmasks fewer tokens early), square ``1 - r^2``;
    ``r = (step + 1) / steps``.
    """
    ratio = torch.tensor(step + 1) / steps
    if schedule == "cosine":
        return torch.cos(ratio * math.pi / 2)
    if schedule == "linear":
        return 1 - ratio
    if schedule == "arccos":
        return torch.arccos(ratio) / (math.pi / 2)
    if schedule == "square":
        return 1 - ratio * ratio
    raise ValueError(f"schedule {schedule!r} is unknown; expected one of {', '.join(SCHEDULES)}")


def tokens_to_mask(schedule: str, step: int, steps: int, num_tokens: int,
                   maskable: torch.Tensor, starting_mask_ratio: float | torch.Tensor = 1) -> torch.Tensor:
    """Per-row count of tokens to (re-)mask after ``step``: ``floor(N * smr * ratio)`` clamped to
    ``[1, maskable - 1]`` (AmusedScheduler.step). ``maskable`` is ``[B]`` long: masked tokens for
    persistent rules, editable tokens for revocable rules. Returns a float ``[B, 1]`` tensor like the
    reference (use ``.long()`` for indexing)."""
    count = (num_tokens * (starting_mask_ratio * mask_ratio(schedule, step, steps))).floor()
    count = torch.min(maskable[:, None] - 1, count)
    return torch.max(torch.tensor([1]), count)


def choice_temperatures(steps: int, start: float = 2.0, end: float = 0.0) -> torch.Tensor:
    """Gumbel choice temperature per step, ``linspace(start, end, steps)`` (AmusedScheduler.set_timesteps)."""
    return torch.linspace(start, end, steps)

"""One model step, shared by the sampling loop and the selector trainer.

A step runs the generator once for the negative and the positive condition (one batch), applies
classifier-free guidance in logit space, and draws one categorical proposal per position from each image's
own generator. The order of operations and random draws follows diffusers ``AmusedPipeline.__call__`` and
``AmusedScheduler.step``, so Purity reproduces the reference token for token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .schedules import SCHEDULES


@dataclass
class Conditioning:
    """Text condition of a batch: positive (and optional negative) CLIP states + micro-conditions."""

    hidden_states: torch.Tensor              # [B, L, D] CLIP hidden_states[-2]
    pooled: torch.Tensor                     # [B, P] CLIP text_embeds
    micro_conds: torch.Tensor                # [B, 5] [width, height, crop_x, crop_y, aesthetic]
    negative_hidden_states: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.hidden_states.shape[0]

    def rows(self, rows: list[int]) -> "Conditioning":
        """The condition of a subset of the batch."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx.to(t.device)]
        return Conditioning(pick(self.hidden_states), pick(self.pooled), pick(self.micro_conds),
                            pick(self.negative_hidden_states), pick(self.negative_pooled))


class NonFiniteLogitsError(RuntimeError):
    """The generator produced NaN/inf logits (broken weights, or an unstable dtype such as fp16)."""


def guided_logits(model: torch.nn.Module, tokens: torch.Tensor, cond: Conditioning, cfg: float,
                  timestep: int) -> torch.Tensor:
    """Logits ``[B, K, h, w]`` with classifier-free guidance ``u + cfg * (c - u)`` in logit space.

    Negative and positive rows go through the model in one batch (rows ``[negative; positive]`` as in
    the reference pipeline). With ``cfg == 1`` or no negative condition only the positive pass runs.
    """
    dtype = next(model.parameters()).dtype
    guided = cfg != 1.0 and cond.negative_hidden_states is not None
    t = torch.tensor([timestep], device=tokens.device)

    def prepare(*parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts).to(tokens.device, dtype)

    if guided:
        logits = model(torch.cat([tokens, tokens]), prepare(cond.negative_hidden_states, cond.hidden_states),
                       prepare(cond.negative_pooled, cond.pooled), prepare(cond.micro_conds, cond.micro_conds), t)
        uncond, positive = logits.chunk(2)
        return uncond + cfg * (positive - uncond)
    return model(tokens, prepare(cond.hidden_states), prepare(cond.pooled), prepare(cond.micro_conds), t)


def draw_proposal(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One categorical draw per position ``[B, N]``; row b draws ``torch.multinomial`` over fp32 probabilities
    on the device of ``generators[b]``. CPU generators (the default) reproduce the reference, which copies
    the probabilities to the CPU every step; generators on the model's GPU skip that copy and the CPU draw,
    which dominate a GPU step (BENCHMARKS.md), at the price of other tokens than the reference's."""
    draws = [torch.multinomial(p.float().to(g.device), 1, generator=g)[:, 0].to(probs.device)
             for p, g in zip(probs, generators)]
    return torch.stack(draws)


@dataclass
class StepDraw:
    probs: torch.Tensor      # [B, N, K] the guided token distribution (after the temperature)
    draws: torch.Tensor      # [B, N] one token drawn per position


def drawing_from(generators: list[torch.Generator]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The proposer that draws row b of the probabilities from ``generators[b]`` (:func:`draw_proposal`)."""
    return lambda probs: draw_proposal(probs, generators)


def model_step(model: torch.nn.Module, tokens: torch.Tensor, cond: Conditioning, cfg: float, timestep: int,
               temperature: float, propose: Callable[[torch.Tensor], torch.Tensor], upcast: bool = False) -> StepDraw:
    """The guided distribution of every position of ``tokens`` ``[B, h, w]`` (mask id where masked) and one
    draw per position by ``propose`` (``[B, N, K]`` probabilities → ``[B, N]`` tokens): :func:`drawing_from`
    the run's generators, or :class:`~tcts.sampling.draw_ahead.DrawAhead`, which draws the same tokens. ``upcast``: softmax in fp32 whatever the logits' dtype
    (the selector trainer under bf16 autocast); otherwise in the model's dtype, as the reference does."""
    b = tokens.shape[0]
    logits = guided_logits(model, tokens, cond, cfg, timestep)
    logits = logits.reshape(b, logits.shape[1], -1).permute(0, 2, 1)
    if upcast:
        logits = logits.float()
    if not torch.isfinite(logits).all():
        raise NonFiniteLogitsError(
            f"the generator returned NaN/inf logits at timestep {timestep}; the weights may be broken or the "
            "dtype unstable (try fp32 or bf16 instead of fp16)")
    if temperature != 1.0:
        logits = logits / temperature
    probs = logits.softmax(dim=-1)
    return StepDraw(probs=probs, draws=propose(probs))


def validate_sampling(steps: int, cfg: float, temperature: float, choice_temperature: tuple[float, float],
                      schedule: str) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0 (1 disables guidance), got {cfg!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"sampling temperature must be a finite number > 0, got {temperature!r}")
    if any(not math.isfinite(t) or t < 0 for t in choice_temperature):
        raise ValueError(f"choice temperature must be finite and >= 0, got {choice_temperature!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is unknown; expected one of {', '.join(SCHEDULES)}")

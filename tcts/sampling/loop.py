"""The one masked-generative sampling loop; strategies plug in as selection rules (``rules.py``).

Per step: one batched forward for the negative and positive condition, classifier-free guidance in
logit space, a categorical draw of a proposal for every position, the rule's choice of positions to
keep, re-masking of the rest; the last step fills every position. The order of operations and random
draws follows diffusers ``pipelines/deprecated/amused/pipeline_amused.py`` (``__call__``) and
``schedulers/scheduling_amused.py`` (``step``), so Purity reproduces the reference token for token.
"""
from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..attention import requested_attention, step_capture
from .rules import Selection, SelectionRule, StepState
from .schedules import SCHEDULES, choice_temperatures, tokens_to_mask


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


@dataclass
class StepReport:
    """What the per-step callback receives (for progress bars, previews, interruption)."""

    step: int
    steps: int
    tokens: torch.Tensor                     # [B, h, w] after this step (mask id where masked)
    proposal: torch.Tensor                   # [B, h, w] tokens proposed this step
    masked: torch.Tensor                     # [B, h, w] bool: masked after this step
    scores: torch.Tensor | None              # [B, h, w] the rule's keep-scores (None on the last step)


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


def validate_sampling_args(steps: int, cfg: float, sampling_temperature: float,
                           choice_temperature: tuple[float, float], schedule: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0 (1 disables guidance), got {cfg!r}")
    if not math.isfinite(sampling_temperature) or sampling_temperature <= 0:
        raise ValueError(f"sampling temperature must be a finite number > 0, got {sampling_temperature!r}")
    if any(not math.isfinite(t) or t < 0 for t in choice_temperature):
        raise ValueError(f"choice temperature must be finite and >= 0, got {choice_temperature!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is unknown; expected one of {', '.join(SCHEDULES)}")


def sample_steps(model: torch.nn.Module, cond: Conditioning, rule: SelectionRule, *, steps: int,
           grid: tuple[int, int] | None = None, tokens: torch.Tensor | None = None,
           fixed: torch.Tensor | None = None, generators: list[torch.Generator],
           draw_generators: list[torch.Generator] | None = None, cfg: float = 10.0, schedule: str = "cosine",
           choice_temperature: tuple[float, float] = (2.0, 0.0), sampling_temperature: float = 1.0,
           start_step: int = 0, starting_mask_ratio: float | torch.Tensor = 1,
           extras: dict | None = None,
           callback: Callable[[StepReport], None] | None = None) -> torch.Tensor:
    """Run the masked sampling loop and return the final token grid ``[B, h, w]``.

    ``tokens`` (``[B, h, w]``, mask id where masked) starts img2img/inpaint/edit runs; otherwise the
    grid ``(h, w)`` starts fully masked. ``fixed`` marks positions that always keep their current token
    (inpaint outside the mask, edit outside the region). ``start_step`` skips the first steps of the
    schedule (img2img strength). ``generators`` holds one CPU generator per image: image b's draws come
    only from ``generators[b]``, so a batch equals separate runs with the same seeds. ``draw_generators``
    (one per image, e.g. on the GPU) take over the proposal draws only; the rules' noise stays on
    ``generators``.
    """
    validate_sampling_args(steps, cfg, sampling_temperature, choice_temperature, schedule)
    mask_id = model.vocab_size - 1
    device = next(model.parameters()).device
    batch = cond.batch_size
    if len(generators) != batch:
        raise ValueError(f"need one generator per image: got {len(generators)} for batch {batch}")
    draw_generators = generators if draw_generators is None else draw_generators
    if len(draw_generators) != batch:
        raise ValueError(f"need one draw generator per image: got {len(draw_generators)} for batch {batch}")
    if tokens is None:
        if grid is None:
            raise ValueError("give either start tokens or a token grid size")
        tokens = torch.full((batch, *grid), mask_id, dtype=torch.long, device=device)
    tokens = tokens.to(device)
    b, h, w = tokens.shape
    if b != batch:
        raise ValueError(f"start tokens have batch {b} but the condition has batch {batch}")
    if ((tokens < 0) | (tokens > mask_id) | ((tokens >= model.codebook_size) & (tokens != mask_id))).any():
        raise ValueError(f"start tokens must be codebook ids in [0, {model.codebook_size}) or the mask id "
                         f"{mask_id}")
    if not 0 <= start_step < steps:
        raise ValueError(f"start step {start_step} must be in [0, {steps})")
    fixed = (torch.zeros_like(tokens, dtype=torch.bool) if fixed is None else fixed.to(device)).reshape(b, -1)
    temperatures = choice_temperatures(steps, *choice_temperature)
    flat = tokens.reshape(b, -1)
    n = flat.shape[1]
    memory = dict(extras or {})  # one dict per run: rules may keep run state here (FAS groups)
    for step in range(start_step, steps):
        request = requested_attention(rule, step, steps, memory) if step < steps - 1 else None
        with step_capture(model, request, batch=b) as captured:  # only this forward, conditional rows
            logits = guided_logits(model, flat.view(b, h, w), cond, cfg, steps - 1 - step)
        logits = logits.reshape(b, logits.shape[1], n).permute(0, 2, 1)
        if not torch.isfinite(logits).all():
            raise NonFiniteLogitsError(
                f"the generator returned NaN/inf logits at step {step + 1}/{steps}; the weights may be "
                "broken or the dtype unstable (try fp32 or bf16 instead of fp16)")
        if sampling_temperature != 1.0:
            logits = logits / sampling_temperature
        probs = logits.softmax(dim=-1)
        sampled = draw_proposal(probs, draw_generators)
        unknown = flat == mask_id
        proposal = torch.where(unknown, sampled, flat)
        if rule.revocable and getattr(rule, "repredict_visible", False):
            proposal = torch.where(fixed, flat, sampled)
        if step == steps - 1:
            flat = proposal
            selection = Selection(keep=torch.ones_like(unknown))
        else:
            maskable = (unknown if not rule.revocable else ~fixed).sum(dim=-1)
            state = StepState(
                step=step, steps=steps, tokens=flat, proposal=proposal, probs=probs,
                proposal_prob=probs.gather(-1, proposal[..., None])[..., 0], unknown=unknown,
                fixed=fixed, mask_count=tokens_to_mask(schedule, step, steps, n, maskable.cpu(),
                                                       starting_mask_ratio),
                choice_temperature=temperatures[step],
                generators=generators, grid=(h, w), condition=cond, extras=memory,
                attention=None if captured is None else captured.result())
            selection = rule.select(state)
            flat = torch.where(selection.keep | fixed, proposal, mask_id)
            if selection.fix is not None:  # persistent picks (FAS LOW group) stay fixed from now on
                fixed = fixed | selection.fix.to(fixed.device)
        if callback is not None:
            callback(StepReport(
                step=step, steps=steps, tokens=flat.view(b, h, w), proposal=proposal.view(b, h, w),
                masked=(flat == mask_id).view(b, h, w),
                scores=None if selection.scores is None else selection.scores.view(b, h, w)))
    return flat.view(b, h, w)


def sample(model: torch.nn.Module, cond: Conditioning, rule: SelectionRule, **options) -> torch.Tensor:
    """Run the masked sampling loop (:func:`sample_steps`) and return the final token grid ``[B, h, w]``.

    The text condition is constant during a run, so generators that can (aMUSEd's ``text_cache``) compute
    their cross-attention keys/values of the text once per run instead of once per step.
    """
    cache = getattr(model, "text_cache", None)
    with cache() if cache is not None else contextlib.nullcontext():
        return sample_steps(model, cond, rule, **options)

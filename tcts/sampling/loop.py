"""The one masked-generative sampling loop; strategies plug in as rules (``rules.py``, ``registry.py``).

Per step: one model step (``step.model_step``: CFG forward, one categorical proposal per position), the
rule's choice of positions to keep, re-masking of the rest; the last step fills every position, and a run
ends early once nothing is masked (a rule may commit more than the schedule's count). The order of
operations and random draws follows diffusers ``AmusedPipeline.__call__`` and ``AmusedScheduler.step``, so
Purity reproduces the reference token for token.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..attention import step_capture
from ..settings import Sampling
from .draw_ahead import DrawAhead
from .rules import Rule, StepState
from .schedules import choice_temperatures, tokens_to_mask
from .step import Conditioning, NonFiniteLogitsError, drawing_from, model_step, validate_sampling


@dataclass
class StepReport:
    """What the per-step callback receives (for progress bars, previews, interruption)."""

    step: int
    steps: int
    tokens: torch.Tensor                     # [B, h, w] after this step (mask id where masked)
    proposal: torch.Tensor                   # [B, h, w] tokens proposed this step
    masked: torch.Tensor                     # [B, h, w] bool: masked after this step
    scores: torch.Tensor | None              # [B, h, w] the rule's keep-scores (None on the last step)


@dataclass
class LoopStart:
    """Where a run starts: the token map (mask id where masked), positions that never change, the first
    schedule step, and the share of the schedule's count that applies (inpaint / edit: the masked share)."""

    tokens: torch.Tensor                           # [B, h, w]
    fixed: torch.Tensor | None = None              # [B, h, w] bool
    start_step: int = 0
    starting_mask_ratio: float | torch.Tensor = 1


@dataclass
class Draws:
    """The per-image random generators of a run: the rules' noise always comes from ``rules`` (CPU); the
    proposals from ``proposals`` (the same, or generators on the model's device). ``ahead``: draw the
    proposals' random numbers from ``rules`` ahead, on worker threads, while the model runs (the same tokens
    as drawing them in turn; ``draw_ahead.py``), for a model on a GPU."""

    rules: list[torch.Generator]
    proposals: list[torch.Generator] | None = None
    ahead: bool = False

    @property
    def for_proposals(self) -> list[torch.Generator]:
        return self.proposals if self.proposals is not None else self.rules


def check_start(model: torch.nn.Module, start: LoopStart, batch: int, steps: int) -> None:
    mask_id = model.mask_token_id
    tokens = start.tokens
    if tokens.ndim != 3 or tokens.shape[0] != batch:
        raise ValueError(f"start tokens must be [batch={batch}, h, w]; got {tuple(tokens.shape)}")
    if ((tokens < 0) | (tokens > mask_id) | ((tokens >= model.codebook_size) & (tokens != mask_id))).any():
        raise ValueError(f"start tokens must be codebook ids in [0, {model.codebook_size}) or the mask id "
                         f"{mask_id}")
    if not 0 <= start.start_step < steps:
        raise ValueError(f"start step {start.start_step} must be in [0, {steps})")


def run_loop(model: torch.nn.Module, cond: Conditioning, rule: Rule, sampling: Sampling, start: LoopStart,
             draws: Draws, callback: Callable[[StepReport], None] | None = None) -> torch.Tensor:
    """Run the masked sampling loop and return the final token grid ``[B, h, w]``.

    ``sampling`` must be complete (every field set; ``tcts.settings.resolve_sampling``). Image b's draws come
    only from its own generators, so a batch equals separate runs with the same seeds."""
    if not sampling.complete():
        raise ValueError(f"the sampling settings are not complete: {sampling}")
    steps = sampling.steps
    validate_sampling(steps, sampling.cfg, sampling.temperature, sampling.choice_temperature, sampling.schedule)
    batch = cond.batch_size
    for what, generators in (("generator", draws.rules), ("draw generator", draws.for_proposals)):
        if len(generators) != batch:
            raise ValueError(f"need one {what} per image: got {len(generators)} for batch {batch}")
    check_start(model, start, batch, steps)
    device = next(model.parameters()).device
    b, h, w = start.tokens.shape
    flat = start.tokens.to(device).reshape(b, -1)
    fixed = (torch.zeros_like(flat, dtype=torch.bool) if start.fixed is None
             else start.fixed.to(device).reshape(b, -1).bool())
    ahead = DrawAhead(draws.rules, device, h * w, model.codebook_size) \
        if draws.ahead and draws.proposals is None else None
    run = _Run(model, cond, rule, sampling, start, draws, callback, ahead)
    try:
        if ahead is not None:
            ahead.prefetch()      # the generators stand where the first step's draw starts
        return _steps(run, flat, fixed)
    finally:
        if ahead is not None:
            ahead.close()


@dataclass
class _Run:
    """What stays the same during one run of :func:`run_loop`."""

    model: torch.nn.Module
    cond: Conditioning
    rule: Rule
    sampling: Sampling
    start: LoopStart
    draws: Draws
    callback: Callable[[StepReport], None] | None
    ahead: DrawAhead | None


def _steps(run: _Run, flat: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The steps of :func:`run_loop` from ``flat`` ``[B, N]`` (the start's tokens on the model's device) and
    ``fixed`` (positions that never change)."""
    model, cond, rule, sampling, start, draws, callback, ahead = (
        run.model, run.cond, run.rule, run.sampling, run.start, run.draws, run.callback, run.ahead)
    steps, mask_id = sampling.steps, model.mask_token_id
    temperatures = choice_temperatures(steps, *sampling.choice_temperature)
    propose = drawing_from(draws.for_proposals) if ahead is None else ahead.propose
    b, h, w = start.tokens.shape
    memory: dict = {}  # one dict per run: rules keep run state here (FAS groups)
    for step in range(start.start_step, steps):
        last = step == steps - 1
        request = None if last else rule.attention(step, steps, memory)
        with step_capture(model, request, batch=b) as captured:  # only this forward, conditional rows
            try:
                drawn = model_step(model, flat.view(b, h, w), cond, sampling.cfg, steps - 1 - step,
                                   sampling.temperature, propose)
            except NonFiniteLogitsError:
                raise NonFiniteLogitsError(
                    f"the generator returned NaN/inf logits at step {step + 1}/{steps}; the weights may be "
                    "broken or the dtype unstable (try fp32 or bf16 instead of fp16)") from None
        unknown = flat == mask_id
        proposal = torch.where(fixed, flat, drawn.draws) if rule.repredict_visible else \
            torch.where(unknown, drawn.draws, flat)
        scores = None
        if last:
            flat = proposal
        else:
            maskable = (~fixed if rule.revocable else unknown).sum(dim=-1)
            state = StepState(
                step=step, steps=steps, tokens=flat, proposal=proposal, probs=drawn.probs, unknown=unknown,
                fixed=fixed, mask_count=tokens_to_mask(sampling.schedule, step, steps, flat.shape[1], maskable.cpu(),
                                                       start.starting_mask_ratio),
                choice_temperature=temperatures[step], generators=draws.rules, grid=(h, w), condition=cond,
                extras=memory, attention=None if captured is None else captured.result())
            selection = rule.select(state)
            flat = torch.where(selection.keep | fixed, proposal, mask_id)
            scores = selection.scores
            if selection.fix is not None:  # e.g. FAS's persistent picks: fixed from now on
                fixed = fixed | selection.fix.to(fixed.device)
        done = last or not (flat == mask_id).any()
        if ahead is not None and not done:
            ahead.prefetch()      # after the rule's noise: where the reference's next draw starts
        if callback is not None:
            callback(StepReport(step=step, steps=steps, tokens=flat.view(b, h, w), proposal=proposal.view(b, h, w),
                                masked=(flat == mask_id).view(b, h, w),
                                scores=None if scores is None else scores.view(b, h, w)))
        if done:
            break
    return flat.view(b, h, w)


def sample(model: torch.nn.Module, cond: Conditioning, rule: Rule, sampling: Sampling, start: LoopStart,
           draws: Draws, callback: Callable[[StepReport], None] | None = None) -> torch.Tensor:
    """:func:`run_loop` with the text condition's keys/values computed once per run where the generator can
    (aMUSEd's ``text_cache``: the condition is constant during a run)."""
    cache = getattr(model, "text_cache", None)
    with cache() if cache is not None else contextlib.nullcontext():
        return run_loop(model, cond, rule, sampling, start, draws, callback)

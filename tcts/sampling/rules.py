"""Selection rules: after each step, which positions keep their proposed token.

A rule is a small object with ``revocable`` (may a kept token be re-masked later?), ``needs_attention``
and ``select(state) -> Selection``. The loop (``loop.py``) owns everything else: CFG, token sampling,
schedules, fixed positions and the final fill. Random draws use the per-image CPU generators in
``state.generators`` after the loop's own multinomial draw, which reproduces the reference RNG order
(diffusers ``scheduling_amused.py``: multinomial, then ``uniform_`` for the Gumbel noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch


@dataclass
class StepState:
    """What a rule may look at (read-only). Token tensors are flattened to ``[B, N]``."""

    step: int                       # 0-based index of this step
    steps: int                      # total steps of the schedule
    tokens: torch.Tensor            # [B, N] before this step (mask id where masked)
    proposal: torch.Tensor          # [B, N] tokens sampled this step (x-hat)
    probs: torch.Tensor             # [B, N, K] guided token distribution
    proposal_prob: torch.Tensor     # [B, N] probability of the proposed token
    unknown: torch.Tensor           # [B, N] bool: masked before this step
    fixed: torch.Tensor             # [B, N] bool: positions that must keep their current token
    mask_count: torch.Tensor        # [B, 1] how many positions are (re-)masked after this step
    choice_temperature: torch.Tensor  # annealed temperature of the choice noise (float32 scalar)
    generators: list[torch.Generator]
    grid: tuple[int, int]           # token grid (h, w)
    condition: Any = None           # the run's Conditioning (text states for learned selectors)
    attention: Any = None           # captured attention of this step's forward (rules with needs_attention)
    extras: dict[str, Any] = field(default_factory=dict)  # a caller's extras; one dict per run, so rules
                                                          #   may keep run state here under their own key

    @property
    def progress(self) -> float:
        return (self.step + 1) / self.steps


@dataclass
class Selection:
    keep: torch.Tensor              # [B, N] bool: keep the proposal here
    scores: torch.Tensor | None = None  # [B, N] the rule's per-token keep-score (for previews/analysis)
    fix: torch.Tensor | None = None     # [B, N] bool: kept positions that become fixed from now on (FAS)


class SelectionRule(Protocol):
    name: str
    revocable: bool
    needs_attention: bool

    def select(self, state: StepState) -> Selection: ...


def uniform_noise(shape: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
    """``[B, N]`` U(0,1) noise, row b drawn from ``generators[b]`` (CPU)."""
    return torch.cat([torch.zeros(1, shape[1]).uniform_(0, 1, generator=g) for g in generators])


def gumbel_noise(shape: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
    """Gumbel(0,1) noise ``-log(-log(u))`` with the reference clamps (scheduling_amused.py gumbel_noise)."""
    u = uniform_noise(shape, generators)
    return -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))


def keep_all_but_lowest(scores: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Keep mask that re-masks exactly ``count[b]`` lowest-scoring positions of each row."""
    order = scores.argsort(dim=-1)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks >= count.to(ranks.device).long()


class Purity:
    """MaskGIT/aMUSEd confidence (persistent): re-mask the least confident newly sampled tokens.

    ``conf = log p(x-hat) + T * Gumbel`` with known tokens at ``finfo.max``; positions with ``conf``
    below the ``mask_count``-th smallest value are re-masked (diffusers scheduling_amused.py
    ``mask_by_random_topk``); Lee et al. 2023 §3 "purity" baseline in its MaskGIT form.
    """

    name = "purity"
    revocable = False
    needs_attention = False

    def select(self, state: StepState) -> Selection:
        selected = torch.where(state.unknown, state.proposal_prob,
                               torch.finfo(state.proposal_prob.dtype).max)
        noise = gumbel_noise(tuple(selected.shape), state.generators).to(selected.device)
        confidence = torch.log(selected.clamp(1e-20)) + state.choice_temperature * noise
        cutoff = torch.sort(confidence, dim=-1).values.gather(1, state.mask_count.long().to(selected.device))
        return Selection(keep=~(confidence < cutoff), scores=confidence)


class Uniform:
    """Random order (persistent): keep a uniformly random subset of the newly sampled tokens
    (Lee et al. 2023 §3, after VQ-Diffusion / Draft-and-Revise)."""

    name = "uniform"
    revocable = False
    needs_attention = False

    def select(self, state: StepState) -> Selection:
        scores = uniform_noise(tuple(state.unknown.shape), state.generators).to(state.unknown.device)
        scores = torch.where(state.unknown, scores, torch.inf)
        return Selection(keep=keep_all_but_lowest(scores, state.mask_count), scores=scores)


class RandomRevoke:
    """Random Revoke (revocable): each step the kept set is drawn afresh over *all* editable positions,
    so earlier tokens can be revoked (Lee et al. 2023, RR baseline; prototype "random revoke").

    ``repredict_visible``: the proposal at visible positions. False (default) copies the current token
    into the proposal (``x-hat = where(x == M, x-hat, x)``), which is right for generators trained on
    masked positions only (aMUSEd, Meissonic); True takes the generator's new prediction there, which
    is right for x0-predictors trained on all positions (VQ-Diffusion).
    """

    name = "random-revoke"
    revocable = True
    needs_attention = False

    def __init__(self, repredict_visible: bool = False) -> None:
        self.repredict_visible = repredict_visible

    def select(self, state: StepState) -> Selection:
        scores = uniform_noise(tuple(state.unknown.shape), state.generators).to(state.unknown.device)
        scores = torch.where(state.fixed, torch.inf, scores)
        return Selection(keep=keep_all_but_lowest(scores, state.mask_count), scores=scores)


RULES: dict[str, Callable[..., SelectionRule]] = {
    "purity": Purity,
    "uniform": Uniform,
    "random-revoke": RandomRevoke,
}


def make_rule(name: str, **options: Any) -> SelectionRule:
    """Build a registered rule by name (``purity``, ``uniform``, ``random-revoke``, …)."""
    if name not in RULES:
        raise ValueError(f"sampler {name!r} is unknown; expected one of {', '.join(sorted(RULES))}")
    return RULES[name](**options)

"""The rule contract, and the baseline rules (Purity, Uniform, Random Revoke).

A rule decides, after each step, which positions keep their proposed token. The loop (``loop.py``) owns
everything else: CFG, token draws, the schedule, fixed positions and the final fill. What a rule may ask of
the loop is all in :class:`Rule`:

* ``revocable``: may a kept token be re-masked later? (persistent rules choose among the newly drawn
  tokens, revocable ones among every editable position);
* ``repredict_visible``: does the proposal take the generator's new draw at visible positions too
  (otherwise they keep their token);
* ``attention(step, steps, memory)``: attention to capture during this step's forward (FAS);
* ``select(state) -> Selection``: the kept set, optional per-token scores, and positions that become
  fixed from now on (FAS's persistent picks). ``state.mask_count`` is the schedule's budget; a rule may keep
  more (an adaptive rule commits as many as it trusts), and the loop ends early when nothing is masked.

Random draws of rules use the per-image CPU generators in ``state.generators`` after the loop's own
multinomial draw, which reproduces the reference RNG order (diffusers ``AmusedScheduler.step``:
multinomial, then ``uniform_`` for the Gumbel noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention import AttentionRequest
from ..options import option, validate


@dataclass
class StepState:
    """What a rule may look at (read-only). Token tensors are flattened to ``[B, N]``."""

    step: int                       # 0-based index of this step
    steps: int                      # total steps of the schedule
    tokens: torch.Tensor            # [B, N] before this step (mask id where masked)
    proposal: torch.Tensor          # [B, N] tokens sampled this step (x-hat)
    probs: torch.Tensor             # [B, N, K] guided token distribution
    unknown: torch.Tensor           # [B, N] bool: masked before this step
    fixed: torch.Tensor             # [B, N] bool: positions that must keep their current token
    mask_count: torch.Tensor        # [B, 1] how many positions the schedule masks after this step
    choice_temperature: torch.Tensor  # annealed temperature of the choice noise (float32 scalar)
    generators: list[torch.Generator]
    grid: tuple[int, int]           # token grid (h, w)
    condition: Any = None           # the run's Conditioning (text states for learned selectors)
    attention: Any = None           # captured attention of this step's forward (rules that asked for it)
    extras: dict[str, Any] = field(default_factory=dict)  # one dict per run: rules keep run state here

    @property
    def progress(self) -> float:
        return (self.step + 1) / self.steps

    @property
    def proposal_prob(self) -> torch.Tensor:
        """``[B, N]`` probability of the proposed token."""
        return self.probs.gather(-1, self.proposal[..., None])[..., 0]


@dataclass
class Selection:
    keep: torch.Tensor              # [B, N] bool: keep the proposal here
    scores: torch.Tensor | None = None  # [B, N] the rule's per-token keep-score (for previews/analysis)
    fix: torch.Tensor | None = None     # [B, N] bool: kept positions that become fixed from now on


class Rule:
    """The contract every rule follows (defaults: persistent, copies visible tokens, no attention)."""

    name: str = ""
    revocable: bool = False

    @property
    def repredict_visible(self) -> bool:
        return False

    def attention(self, step: int, steps: int, memory: dict) -> AttentionRequest | None:
        return None

    def select(self, state: StepState) -> Selection:
        raise NotImplementedError


def uniform_noise(shape: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
    """``[B, N]`` U(0,1) noise, row b drawn from ``generators[b]`` (CPU)."""
    return torch.cat([torch.zeros(1, shape[1]).uniform_(0, 1, generator=g) for g in generators])


def gumbel_noise(shape: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
    """Gumbel(0,1) noise ``-log(-log(u))`` with the reference clamps (AmusedScheduler's gumbel_noise)."""
    u = uniform_noise(shape, generators)
    return -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))


def keep_all_but_lowest(scores: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Keep mask that re-masks exactly ``count[b]`` lowest-scoring positions of each row."""
    order = scores.argsort(dim=-1)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks >= count.to(ranks.device).long()


def top_count(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, N]``: the ``count[b]`` highest-scoring candidates of each row (ties by position)."""
    ranked = torch.where(candidates, scores.float(), -torch.inf)
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (ranks < count.to(ranks.device).long()[:, None]) & candidates


def confidence(state: StepState) -> torch.Tensor:
    """MaskGIT/aMUSEd confidence ``log p(x-hat) + T·Gumbel``, known tokens at ``finfo.max``."""
    selected = torch.where(state.unknown, state.proposal_prob, torch.finfo(state.proposal_prob.dtype).max)
    noise = gumbel_noise(tuple(selected.shape), state.generators).to(selected.device)
    return torch.log(selected.clamp(1e-20)) + state.choice_temperature * noise


class Purity(Rule):
    """MaskGIT/aMUSEd confidence (persistent): re-mask the least confident newly sampled tokens.

    Positions with confidence below the ``mask_count``-th smallest value are re-masked (diffusers
    ``AmusedScheduler.step``, ``mask_by_random_topk``); Lee et al. 2023 §3 "purity" baseline in its
    MaskGIT form.
    """

    name = "purity"

    def select(self, state: StepState) -> Selection:
        score = confidence(state)
        cutoff = torch.sort(score, dim=-1).values.gather(1, state.mask_count.long().to(score.device))
        return Selection(keep=~(score < cutoff), scores=score)


class Uniform(Rule):
    """Random order (persistent): keep a uniformly random subset of the newly sampled tokens
    (Lee et al. 2023 §3, after VQ-Diffusion / Draft-and-Revise)."""

    name = "uniform"

    def select(self, state: StepState) -> Selection:
        scores = uniform_noise(tuple(state.unknown.shape), state.generators).to(state.unknown.device)
        scores = torch.where(state.unknown, scores, torch.inf)
        return Selection(keep=keep_all_but_lowest(scores, state.mask_count), scores=scores)


@dataclass(frozen=True)
class RevocableOptions:
    """What every revocable rule shares."""

    repredict_visible: bool = option(
        False, "revocable samplers: re-predict visible tokens instead of copying them (only for generators "
               "trained on all positions, e.g. VQ-Diffusion; aMUSEd and Meissonic are trained on masked "
               "positions only)", advanced=True)

    def __post_init__(self) -> None:
        validate(self)


class RevocableRule(Rule):
    """Base of the revocable rules: the kept set is chosen again over every editable position each step."""

    revocable = True

    def __init__(self, revocable: RevocableOptions | None = None) -> None:
        self.revocable_options = revocable or RevocableOptions()

    @property
    def repredict_visible(self) -> bool:
        return self.revocable_options.repredict_visible


class RandomRevoke(RevocableRule):
    """Random Revoke (revocable): each step the kept set is drawn afresh over *all* editable positions,
    so earlier tokens can be revoked (Lee et al. 2023, RR baseline)."""

    name = "random-revoke"

    def select(self, state: StepState) -> Selection:
        scores = uniform_noise(tuple(state.unknown.shape), state.generators).to(state.unknown.device)
        scores = torch.where(state.fixed, torch.inf, scores)
        return Selection(keep=keep_all_but_lowest(scores, state.mask_count), scores=scores)

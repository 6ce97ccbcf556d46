"""Entropy-bounded unmasking (persistent, adaptive): commit as many tokens per step as an entropy budget allows
(docs/method.md, Entropy-bounded).

After Ben-Hamu, Gat, Severo, Nolte and Karrer, *Accelerated Sampling from Masked Diffusion Models via Entropy
Bounded Unmasking* (EB-sampler), arXiv 2505.24857, published for text. Each step, over the unknown positions:

1. the entropy ``H_i`` of this step's distribution (the guided, tempered one the loop drew from), in nats;
2. an error proxy ``e_i`` orders them, most certain first: ``entropy`` ``H_i``, ``confidence`` ``−max p_i``,
   ``margin`` ``−(p_i⁽¹⁾ − p_i⁽²⁾)`` (top-1 minus top-2 probability);
3. along that order the longest prefix with ``Σ H − max H ≤ γ`` is committed, at least one position
   (the sum bounds the dependence between tokens decoded together, which independent draws ignore);
4. the committed count is ``max(EB count, unknown − mask_count)``: never fewer than the schedule keeps, so a
   run never takes more than ``steps`` model passes, and more when the budget allows; once nothing is
   masked the loop stops early.

The tokens are the loop's categorical draws at those positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import option, validate
from .rules import Rule, Selection, StepState

__all__ = ["EB_PROXIES", "EntropyBounded", "EntropyBoundedOptions", "entropy_bounded_count"]

EB_PROXIES = ("entropy", "confidence", "margin")


@dataclass(frozen=True)
class EntropyBoundedOptions:
    """The options of entropy-bounded unmasking (the CLI's ``--eb-*`` flags, the nodes, the rule)."""

    gamma: float = option(1.0, "entropy budget in nats: commit the most certain unknown tokens while the sum of their "
                               "entropies minus the largest stays <= gamma (the paper's text default 0.1 commits one "
                               "token per step on image grids, whose tokens carry several nats)",
                          minimum=0.0, maximum=10000.0, step=0.1)
    proxy: str = option("entropy", "which tokens count as most certain: lowest entropy, highest top probability "
                                   "(confidence) or largest top-1 minus top-2 probability (margin)",
                        choices=EB_PROXIES, advanced=True)

    def __post_init__(self) -> None:
        validate(self)


def entropy_and_proxy(probs: torch.Tensor, proxy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, N] entropy in nats, [B, N] error proxy: lower = more certain)`` of a ``[B, N, K]`` distribution."""
    p = probs.float()
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    if proxy == "entropy":
        return entropy, entropy
    top = p.topk(2, dim=-1).values
    return entropy, (-top[..., 0] if proxy == "confidence" else top[..., 1] - top[..., 0])


def entropy_bounded_count(entropy: torch.Tensor, error: torch.Tensor, candidates: torch.Tensor,
                          gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B] EB count >= 1, [B, N] ranks of the candidates by the proxy)``: the longest prefix of the candidates
    ordered by ``error`` whose entropies sum to at most ``gamma`` over their maximum."""
    order = torch.sort(torch.where(candidates, error, torch.inf), dim=-1, stable=True).indices
    inside = candidates.gather(-1, order)
    h = torch.where(inside, entropy.gather(-1, order), 0.0)
    within = (h.cumsum(dim=-1) - h.cummax(dim=-1).values <= gamma) & inside  # a prefix: the excess only grows
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return within.sum(dim=-1).clamp_min(1), ranks


class EntropyBounded(Rule):
    """Commit the longest entropy-bounded prefix of the most certain unknown tokens (module docstring)."""

    name = "entropy-bounded"

    def __init__(self, options: EntropyBoundedOptions | None = None) -> None:
        self.options = options or EntropyBoundedOptions()

    def select(self, state: StepState) -> Selection:
        entropy, error = entropy_and_proxy(state.probs, self.options.proxy)
        candidates = state.unknown & ~state.fixed
        count, ranks = entropy_bounded_count(entropy, error, candidates, self.options.gamma)
        unknown = candidates.sum(dim=-1)
        scheduled = unknown - state.mask_count.reshape(-1).to(unknown.device).long()
        count = torch.minimum(torch.maximum(count, scheduled), unknown)
        keep = ~candidates | (candidates & (ranks < count[:, None]))
        return Selection(keep=keep, scores=torch.where(candidates, -error, torch.inf))

"""FAS, Frequency Adaptive Sampling (project definition; docs/method.md, FAS): a rule wrapping a revocable rule.

Each step the generator's self-attention (captured during this step's forward, conditional rows only,
head- and layer-averaged; see ``tcts/attention.py``) splits the tokens into a LOW- and a HIGH-frequency
group (default statistic ``fft_hf``: the share of a token's attention-row FFT power above half the Nyquist
radius; LOW = the ``q``-fraction with the least). LOW tokens are **persistent**: once kept they join the
loop's ``fixed`` set and are never re-masked. HIGH tokens are **revocable** under the inner rule
(``random-revoke`` for ``fas``; the learned selector for ``tcts-fas``). Budget (docs/method.md, FAS)::

    F = fixed (inpaint / edit outside the region + earlier persistent picks)
    budget = n_keep − |F|;  n_low = round(budget·|LOW \\ F| / |¬F|);  n_high = budget − n_low
    F |= top n_low of LOW \\ F;   keep = F ∪ top n_high of HIGH \\ F         # scores: the inner rule's

so exactly ``n_keep = N − mask_count`` tokens are kept after every step, whatever the groups. The last
step fills every position (the loop). ``invert`` swaps the roles (LOW revocable, HIGH persistent);
``start_frac`` runs the inner rule alone (all revocable) before that fraction of the steps; ``regroup``
``freeze_after`` keeps the groups of the last step before the warm-up fraction ``freeze_after`` (no capture
afterwards, so those steps cost nothing extra). ``low_scorer`` ranks the new persistent picks by the inner
rule's keep-score (``inner``), by p(x̂) (``purity``) or by MaskGIT's Gumbel confidence
(``confidence``).
"""
from __future__ import annotations

import torch

from ..attention import AttentionRequest, fas_low_map
from ..layers import parse_layers
from .fas_options import LOW_SCORERS, REGROUP, FASOptions
from .rules import Rule, Selection, StepState, gumbel_noise, top_count

__all__ = ["FAS", "FASOptions", "LOW_SCORERS", "REGROUP", "fas_name", "top_count"]


def fas_name(inner: str) -> str:
    """The sampler name of FAS around the rule ``inner``: ``fas`` (random-revoke), ``tcts-fas``, ``fas-<inner>``."""
    return {"random-revoke": "fas", "tcts": "tcts-fas"}.get(inner, f"fas-{inner}")


class FAS(Rule):
    """Frequency Adaptive Sampling around a revocable ``inner`` rule (see the module docstring)."""

    revocable = True

    def __init__(self, inner: Rule, options: FASOptions | None = None) -> None:
        if not inner.revocable:
            raise ValueError(f"FAS needs a revocable inner rule (random-revoke, tcts, ...); "
                             f"{inner.name!r} is persistent")
        self.inner = inner
        self.options = options or FASOptions()
        self.name = fas_name(inner.name)
        self.layers = parse_layers(self.options.layers)

    @property
    def repredict_visible(self) -> bool:
        return self.inner.repredict_visible

    @property
    def key(self) -> str:
        return f"fas:{id(self)}"

    def active(self, step: int, steps: int) -> bool:
        """FAS splits the tokens at this step (else the inner rule runs alone)."""
        return step >= self.options.start_frac * steps

    def attention(self, step: int, steps: int, memory: dict) -> AttentionRequest | None:
        inner = self.inner.attention(step, steps, memory)
        if not self.active(step, steps):
            return inner
        if self.options.regroup == "freeze_after" and step >= self.options.freeze_after * steps and self.key in memory:
            return inner
        return AttentionRequest(kinds=("self",), layers=self.layers)

    def groups(self, state: StepState) -> torch.Tensor:
        """LOW ``[B, N]`` bool for this step: fresh from ``state.attention``, or the frozen groups."""
        if state.attention is None:
            frozen = state.extras.get(self.key)
            if frozen is None:
                raise RuntimeError("FAS needs this step's captured self-attention (run it through the sampling "
                                   "loop, which captures what a rule's attention() asks for)")
            return frozen
        o = self.options
        low, _ = fas_low_map(state.attention, o.statistic, o.cutoff, o.q, o.smooth)
        low = low.reshape(low.shape[0], -1).to(state.proposal.device)
        state.extras[self.key] = low
        return low

    def select(self, state: StepState) -> Selection:
        inner = self.inner.select(state)
        if not self.active(state.step, state.steps):
            return inner
        low = self.groups(state)
        persistent = ~low if self.options.invert else low
        scores = inner.scores if inner.scores is not None else inner.keep.float()
        scores = scores.to(state.proposal.device)
        fixed = state.fixed
        free = ~fixed
        n = fixed.shape[-1]
        n_keep = n - state.mask_count.reshape(-1).to(fixed.device).long()
        budget = (n_keep - fixed.sum(dim=-1)).clamp_min(0)
        cand_p, cand_r = persistent & free, ~persistent & free
        n_p = torch.round(budget * cand_p.sum(dim=-1) / free.sum(dim=-1).clamp_min(1)).long()
        n_r = budget - n_p
        pick_p = top_count(self.low_scores(state, scores), cand_p, n_p)
        pick_r = top_count(scores, cand_r, n_r)
        return Selection(keep=fixed | pick_p | pick_r, scores=scores, fix=pick_p)

    def low_scores(self, state: StepState, inner_scores: torch.Tensor) -> torch.Tensor:
        if self.options.low_scorer == "purity":
            return state.proposal_prob
        if self.options.low_scorer == "confidence":  # MaskGIT's Gumbel confidence, over visible tokens too
            noise = gumbel_noise(tuple(state.proposal_prob.shape), state.generators).to(inner_scores.device)
            return torch.log(state.proposal_prob.clamp(1e-20)) + state.choice_temperature * noise
        return inner_scores

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
rule's keep-score (``inner``, alias ``tcts``), by p(x̂) (``purity``) or by MaskGIT's Gumbel confidence
(``confidence``).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..attention import FAS_STATISTICS, AttentionRequest, fas_low_map, parse_layers
from .rules import RULES, Selection, SelectionRule, StepState, gumbel_noise, make_rule

REGROUP = ("every_step", "freeze_after")
LOW_SCORERS = ("inner", "tcts", "purity", "confidence")
#: option names that belong to FAS; everything else goes to the inner rule
FAS_OPTIONS = ("statistic", "layers", "cutoff", "q", "regroup", "freeze_after", "smooth", "invert", "low_scorer",
               "start_frac")


def top_count(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, N]``: the ``count[b]`` highest-scoring candidates of each row (ties by position)."""
    ranked = torch.where(candidates, scores.float(), -torch.inf)
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (ranks < count.to(ranks.device).long()[:, None]) & candidates


class FAS:
    """Frequency Adaptive Sampling around a revocable ``inner`` rule (see the module docstring)."""

    revocable = True
    needs_attention = True

    def __init__(self, inner: SelectionRule, *, statistic: str = "fft_hf", layers: Any = None, cutoff: float = 0.5,
                 q: float = 0.5, regroup: str = "every_step", freeze_after: float = 0.25, smooth: bool = False,
                 invert: bool = False, low_scorer: str = "inner", start_frac: float = 0.0, name: str = "fas") -> None:
        if not getattr(inner, "revocable", False):
            raise ValueError(f"FAS needs a revocable inner rule (random-revoke, tcts); "
                             f"{getattr(inner, 'name', inner)!r} is persistent")
        if statistic not in FAS_STATISTICS:
            raise ValueError(f"FAS statistic {statistic!r} is unknown; expected one of {', '.join(FAS_STATISTICS)}")
        if regroup not in REGROUP:
            raise ValueError(f"FAS regroup {regroup!r} is unknown; expected one of {', '.join(REGROUP)}")
        if low_scorer not in LOW_SCORERS:
            raise ValueError(f"FAS low_scorer {low_scorer!r} is unknown; expected one of {', '.join(LOW_SCORERS)}")
        for what, value, hi in (("q", q, 1.0), ("freeze_after", freeze_after, 1.0), ("start_frac", start_frac, 1.0),
                                ("cutoff", cutoff, math.sqrt(2))):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= hi:
                raise ValueError(f"FAS {what} must be a number in [0, {hi:g}]; got {value!r}")
        self.inner = inner
        self.name = name
        self.statistic = statistic
        self.layers = parse_layers(layers) if isinstance(layers, str) else layers
        self.cutoff = float(cutoff)
        self.q = float(q)
        self.regroup = regroup
        self.freeze_after = float(freeze_after)
        self.smooth = bool(smooth)
        self.invert = bool(invert)
        self.low_scorer = "inner" if low_scorer == "tcts" else low_scorer
        self.start_frac = float(start_frac)

    @property
    def repredict_visible(self) -> bool:
        return bool(getattr(self.inner, "repredict_visible", False))

    @property
    def key(self) -> str:
        return f"fas:{id(self)}"

    def active(self, step: int, steps: int) -> bool:
        """FAS splits the tokens at this step (else the inner rule runs alone)."""
        return step >= self.start_frac * steps

    def attention_request(self, step: int, steps: int, memory: dict) -> AttentionRequest | None:
        if not self.active(step, steps):
            return None
        if self.regroup == "freeze_after" and step >= self.freeze_after * steps and self.key in memory:
            return None
        return AttentionRequest(kinds=("self",), layers=self.layers)

    def groups(self, state: StepState) -> torch.Tensor:
        """LOW ``[B, N]`` bool for this step: fresh from ``state.attention``, or the frozen groups."""
        if state.attention is None:
            frozen = state.extras.get(self.key)
            if frozen is None:
                raise RuntimeError("FAS needs this step's captured self-attention (run it through "
                                   "tcts.sampling.sample, which captures for rules with needs_attention)")
            return frozen
        low, _ = fas_low_map(state.attention, self.statistic, self.cutoff, self.q, self.smooth)
        low = low.reshape(low.shape[0], -1).to(state.proposal.device)
        state.extras[self.key] = low
        return low

    def select(self, state: StepState) -> Selection:
        inner = self.inner.select(state)
        if not self.active(state.step, state.steps):
            return inner
        low = self.groups(state)
        persistent = ~low if self.invert else low
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
        if self.low_scorer == "purity":
            return state.proposal_prob
        if self.low_scorer == "confidence":
            noise = gumbel_noise(tuple(state.proposal_prob.shape), state.generators).to(inner_scores.device)
            return torch.log(state.proposal_prob.clamp(1e-20)) + state.choice_temperature * noise
        return inner_scores


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FAS options, inner-rule options)."""
    fas = {k: v for k, v in options.items() if k in FAS_OPTIONS}
    return fas, {k: v for k, v in options.items() if k not in FAS_OPTIONS}


def make_fas(inner: str = "random-revoke", **options: Any) -> FAS:
    """``fas``: FAS around a named revocable rule (default ``random-revoke``; ``inner="tcts"`` with
    ``selector=...`` is ``tcts-fas``). FAS options are taken out, the rest configure the inner rule."""
    fas_opts, inner_opts = split_options(options)
    return FAS(make_rule(inner, **inner_opts), name="fas" if inner == "random-revoke" else f"{inner}-fas",
               **fas_opts)


def make_tcts_fas(**options: Any) -> FAS:
    """``tcts-fas``: FAS around the learned ``tcts`` rule; needs ``selector=`` (a loaded TokenSelector)."""
    if options.get("selector") is None:
        raise ValueError("the tcts-fas sampler needs a trained selector (selector=...; load one with "
                         "tcts.selector.load_selector, or use sampler 'fas' for FAS around random-revoke)")
    options.pop("inner", None)
    return make_fas("tcts", **options)


RULES["fas"] = make_fas
RULES["tcts-fas"] = make_tcts_fas

"""The ``tcts`` selection rule: keep the tokens a learned selector believes are right (Lee et al. 2023;
docs/method.md, The rule: which tokens are kept; after ``VQ_Critic.inference_generate_sample_with_condition``
of the first author's 2022 prototype code).

Per step (the loop has already drawn the proposal x̂ and, as for every revocable rule, copied the visible
tokens into it, ``x̂ = where(x == M, x̂, x)``):

1. ``q = S(x̂, text, t)``: the selector's P(changed) for every position, with ``t`` = the sampling progress
   *after* this step, ``(step + 1) / steps`` (the prototype feeds ``t_{i+1}`` at inference; training feeds
   the same progress value for a map masked as it is before step ``step``, see ``tcts/train``);
2. optional selector guidance ``w``: ``q = q_null + w·(q_cond − q_null)`` with the selector's learned null
   prompt (``w = 1``, the default, runs only the conditional pass);
3. keep-score ``s = 1 − q`` plus annealed noise ``α·(1 − progress)·U(0, 1)`` (``α`` = ``noise``; the
   uniform draws come from the per-image CPU generators, after the loop's multinomial draw);
4. keep ``n`` of the editable positions (fixed positions always stay): ``topk`` re-masks the
   ``state.mask_count`` lowest scores (:func:`keep_all_but_lowest` semantics); ``multinomial`` draws the kept
   set without replacement with probability ∝ ``max(s, 0) + 1e-6`` (prototype's other scripts).

Revocable: every step re-chooses the kept set over *all* editable positions, so an earlier token the
selector now distrusts is re-masked and resampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import option, validate
from ..sampling.rules import RevocableOptions, RevocableRule, Selection, StepState, keep_all_but_lowest, uniform_noise
from .model import TokenSelector, check_selector_matches

CHOICES = ("topk", "multinomial")


@dataclass(frozen=True)
class SelectorOptions:
    """How the learned rule uses its selector (the CLI's ``--selector-*`` flags, the nodes, the rule)."""

    guidance: float = option(1.0, "selector guidance w: p_null + w*(p_cond - p_null) (1 = off, one selector pass)",
                             minimum=0.0, maximum=20.0, step=0.1)
    noise: float = option(0.0, "annealed noise alpha on the keep-score: alpha*(1 - progress)*U(0, 1)",
                          minimum=0.0, maximum=10.0, step=0.05)
    choice: str = option("topk", "keep the top-n scores (topk) or draw the kept set by score (multinomial)",
                         choices=CHOICES)

    def __post_init__(self) -> None:
        validate(self)


class TCTS(RevocableRule):
    """Text-conditioned token selection (revocable) with a trained :class:`TokenSelector`."""

    name = "tcts"

    def __init__(self, selector: TokenSelector, options: SelectorOptions | None = None,
                 revocable: RevocableOptions | None = None) -> None:
        super().__init__(revocable)
        if not isinstance(selector, TokenSelector):
            raise TypeError(f"the tcts sampler needs a TokenSelector (load one with tcts.selector.load_selector); "
                            f"got {type(selector).__name__}")
        self.selector = selector
        self.options = options or SelectorOptions()
        self._checked: set[tuple[int, int]] = set()

    def prob_changed(self, state: StepState) -> torch.Tensor:
        """The (guided) selector's P(changed) ``[B, N]`` for this step's proposal, on the proposal's device."""
        cond = state.condition
        if cond is None:
            raise ValueError("the tcts sampler needs the run's text condition (StepState.condition)")
        sizes = (int(state.probs.shape[-1]), int(cond.hidden_states.shape[-1]))
        if sizes not in self._checked:  # once per generator, not every step
            check_selector_matches(self.selector, codebook_size=sizes[0], text_hidden_size=sizes[1])
            self._checked.add(sizes)
        b = state.proposal.shape[0]
        device = self.selector.weight_device()
        tokens = state.proposal.reshape(b, *state.grid).to(device)
        text = cond.hidden_states.to(device)
        q = self.selector.prob_changed(tokens, text, state.progress, guidance=self.options.guidance)
        return q.reshape(b, -1).to(state.proposal.device)

    def select(self, state: StepState) -> Selection:
        scores = 1.0 - self.prob_changed(state)
        if self.options.noise > 0:
            u = uniform_noise(tuple(scores.shape), state.generators).to(scores.device)
            scores = scores + self.options.noise * (1.0 - state.progress) * u
        if self.options.choice == "topk":
            ranked = torch.where(state.fixed, torch.inf, scores)
            return Selection(keep=keep_all_but_lowest(ranked, state.mask_count), scores=scores)
        return Selection(keep=self.multinomial_keep(scores, state), scores=scores)

    @staticmethod
    def multinomial_keep(scores: torch.Tensor, state: StepState) -> torch.Tensor:
        """Keep ``editable − mask_count`` editable positions drawn ∝ ``max(score, 0) + 1e-6`` (no replacement)."""
        weights = (scores.float().clamp_min(0) + 1e-6).masked_fill(state.fixed, 0).cpu()
        editable = (~state.fixed).sum(dim=-1).cpu()
        count = state.mask_count.reshape(-1).long().cpu()
        keep = state.fixed.clone().cpu()
        for row, (w, g) in enumerate(zip(weights, state.generators)):
            n_keep = int(editable[row] - count[row])
            if n_keep > 0:
                keep[row, torch.multinomial(w, n_keep, replacement=False, generator=g)] = True
        return keep.to(scores.device)

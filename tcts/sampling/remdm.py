"""ReMDM re-masking (revocable): decoded tokens are masked again at a scheduled rate (docs/method.md, ReMDM).

After Wang, Schiff, Sahoo and Kuleshov, *Remasking Discrete Diffusion Models with Inference-Time Scaling*,
arXiv 2503.00307 (public code: kuleshov-group/remdm, the ``remdm-cap`` / ``remdm-rescale`` / ``remdm-loop``
samplers), published for text. On the grid, with the loop's schedule, step k:

* ``E`` editable positions, ``D`` of them decoded before the step, ``U = E − D`` masked, ``m`` =
  ``state.mask_count`` masked after the step (the schedule's count, unchanged);
* decoded fraction before the step ``α_t = D/E``, after it ``α_s = 1 − m/E``, so
  ``σ_max = min(1, (1 − α_s)/α_t) = min(1, m/D)`` (1 when nothing is decoded yet);
* the re-masking rate σ: ``cap`` ``min(η, σ_max)``; ``rescale`` ``η·σ_max``; ``loop`` ``min(η, σ_max)`` while
  the diffusion time at the start of the step, ``t = 1 − k/steps``, lies in ``(t_off, t_on]``, else 0;
* ``R = round(σ·D)`` decoded tokens are re-masked (half to even; at least ``m − U``, so that ``m`` positions
  can be masked when the schedule asks for more than are masked now): the ``R`` least probable under this
  step's distribution (``choice = confidence``) or ``R`` uniformly random ones (``random``);
* of the newly drawn tokens, ``U − m + R`` are kept, the most confident by Purity's score
  (``log p(x̂) + τ·Gumbel``), so exactly ``m`` positions are masked after the step, as the schedule says.

The last step fills every position (the loop), so it re-masks nothing. Random Revoke is the special case
``σ = m/E`` with a random choice for both sets (its re-masked count is only that on average).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import option, validate
from .rules import RevocableOptions, RevocableRule, Selection, StepState, confidence, top_count, uniform_noise

__all__ = ["REMDM_CHOICES", "REMDM_VARIANTS", "ReMDM", "ReMDMOptions"]

REMDM_VARIANTS = ("cap", "rescale", "loop")
REMDM_CHOICES = ("confidence", "random")


@dataclass(frozen=True)
class ReMDMOptions:
    """The options of ReMDM re-masking (the CLI's ``--remdm-*`` flags, the nodes, the rule)."""

    variant: str = option("cap", "the re-masking rate sigma per step: cap = min(eta, sigma_max), rescale = "
                                 "eta * sigma_max, loop = min(eta, sigma_max) only while t = 1 - step/steps is in "
                                 "(t_off, t_on]", choices=REMDM_VARIANTS)
    eta: float = option(0.05, "eta: the share of decoded tokens re-masked per step (cap, loop) or of its maximum "
                              "sigma_max (rescale); ReMDM's text scripts use 0.008 / 0.015 / 0.02 for 1024 steps",
                        minimum=0.0, maximum=1.0, step=0.005)
    t_on: float = option(0.55, "loop: re-mask while t = 1 - step/steps <= t_on ...", minimum=0.0, maximum=1.0,
                         step=0.05, advanced=True)
    t_off: float = option(0.05, "loop: ... and t > t_off", minimum=0.0, maximum=1.0, step=0.05, advanced=True)
    choice: str = option("confidence", "which decoded tokens are re-masked: the least probable under this step's "
                                       "distribution, or uniformly random ones", choices=REMDM_CHOICES,
                         advanced=True)

    def __post_init__(self) -> None:
        validate(self)
        if self.t_off > self.t_on:
            raise ValueError(f"ReMDMOptions.t_off ({self.t_off!r}) must not exceed t_on ({self.t_on!r})")


class ReMDM(RevocableRule):
    """Re-mask ``round(σ·D)`` decoded tokens per step, refill from the newly drawn ones (module docstring)."""

    name = "remdm"

    def __init__(self, options: ReMDMOptions | None = None, revocable: RevocableOptions | None = None) -> None:
        super().__init__(revocable)
        self.options = options or ReMDMOptions()

    def remask_count(self, state: StepState, decoded: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """``R = round(σ·D)`` ``[B]`` long, decoded tokens to re-mask this step, computed as ``σ·D`` directly
        (``σ_max·D = min(D, m)``), so no division rounds it. Counted on the CPU (float64 there on every device)."""
        d, u = decoded.sum(dim=-1).cpu(), new.sum(dim=-1).cpu()
        m = state.mask_count.reshape(-1).cpu().long()
        most = torch.minimum(d, m).double()                     # σ_max·D
        o = self.options
        if o.variant == "rescale":
            r = o.eta * most
        elif o.variant == "loop" and not o.t_off < 1 - state.step / state.steps <= o.t_on:
            r = torch.zeros_like(most)
        else:                                                   # cap, and loop inside its window
            r = torch.minimum(o.eta * d.double(), most)
        return torch.maximum(torch.round(r).long(), m - u).clamp(min=0).minimum(torch.minimum(d, m))

    def select(self, state: StepState) -> Selection:
        editable = ~state.fixed
        new = state.unknown & editable
        decoded = editable & ~state.unknown
        r = self.remask_count(state, decoded, new)
        m = state.mask_count.reshape(-1).cpu().long()
        fresh = top_count(confidence(state), new, new.sum(dim=-1).cpu() - m + r)  # Purity's order; draws first
        prob = state.proposal_prob.float()
        worth = prob if self.options.choice == "confidence" else \
            uniform_noise(tuple(prob.shape), state.generators).to(prob.device)
        remask = top_count(-worth, decoded, r)
        keep = (decoded & ~remask) | fresh | state.fixed
        scores = torch.where(state.fixed, torch.inf, 2 * keep.float() + prob)  # kept > 1 >= not kept
        return Selection(keep=keep, scores=scores)

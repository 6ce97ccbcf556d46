"""Noise-regularised confidence (persistent): Purity with Gaussian noise on the logits that score the choice
(docs/method.md, Noise regularisation).

After Shao et al., *Bag of Design Choices for Inference of High-Resolution Masked Generative Transformer*,
arXiv 2411.10781 (public code: xie-lab-ml/Bags_of_Tricks_Meissonic, ``Scheduler.step`` with ``add_noise``).
Step k of S: every unknown position gets its own Gaussian noise over the whole codebook,

    ℓ̃ = log p + s_k·ε,   ε ~ N(0, I_K),   s_k = noise_scale · 2·|cos(π·(S − 1 − k)/(S − 1))|

(``log p``: the log-probabilities of the guided, tempered distribution the loop drew from, i.e. the guided
logits over the temperature, up to a per-position constant that the softmax removes; ``S − 1 − k`` is the
timestep the generator receives, so the scale is 2·noise_scale on the first step, 0 half-way and rises
again). The position's score is Purity's with the noisy probability of the drawn token,
``log softmax(ℓ̃)[x̂] + τ_k·Gumbel``, and the ``mask_count`` lowest are re-masked, as Purity does.

The public code adds the noise before the token is drawn, so it changes the tokens too; a rule cannot change
the loop's draw, so here the noise changes only which positions are kept. With ``noise_scale = 0`` no noise
is drawn and the rule is Purity, token for token. The noise comes from each image's generator, before the
Gumbel draw (one ``K``-vector per unknown position and step: ``unknown × K`` normal draws on the CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..options import option, validate
from .rules import Rule, Selection, StepState, confidence, gumbel_noise

__all__ = ["NoiseRegularized", "NoiseRegularizedOptions", "noise_level"]


@dataclass(frozen=True)
class NoiseRegularizedOptions:
    """The options of the noise-regularised confidence (the CLI's ``--noise-scale``, the nodes, the rule)."""

    noise_scale: float = option(1.0, "multiplies the paper's noise schedule 2*|cos(pi*t/(steps-1))| (t = the timestep, "
                                     "steps-1 down to 0) on the logits that score which tokens are kept; 0 = Purity",
                                minimum=0.0, maximum=10.0, step=0.1)

    def __post_init__(self) -> None:
        validate(self)


def noise_level(step: int, steps: int) -> float:
    """``2·|cos(π·t/(S − 1))|`` with the timestep ``t = S − 1 − step`` (0 for a one-step run)."""
    if steps < 2:
        return 0.0
    return 2.0 * abs(math.cos(math.pi * (steps - 1 - step) / (steps - 1)))


def noisy_log_prob(state: StepState, level: float) -> torch.Tensor:
    """``[B, N]``: ``log softmax(log p + level·ε)`` at the proposed token, on unknown positions (else 0)."""
    out = torch.zeros(state.proposal.shape, dtype=torch.float32, device=state.proposal.device)
    for b, generator in enumerate(state.generators):
        where = state.unknown[b].nonzero()[:, 0]
        logits = state.probs[b, where].float().clamp_min(1e-30).log()
        noise = torch.randn(tuple(logits.shape), generator=generator).to(logits.device)
        noisy = (logits + level * noise).log_softmax(dim=-1)
        out[b, where] = noisy.gather(-1, state.proposal[b, where, None])[:, 0]
    return out


def noisy_confidence(state: StepState, level: float) -> torch.Tensor:
    """Purity's confidence (``rules.confidence``) with the noisy log-probability: the noise is drawn first, then
    the Gumbel noise."""
    noisy = noisy_log_prob(state, level)
    selected = torch.where(state.unknown, state.proposal_prob, torch.finfo(state.proposal_prob.dtype).max)
    log_p = torch.where(state.unknown, noisy.to(selected.dtype), torch.log(selected.clamp(1e-20)))
    noise = gumbel_noise(tuple(selected.shape), state.generators).to(selected.device)
    return log_p + state.choice_temperature * noise


class NoiseRegularized(Rule):
    """Purity scored on noise-perturbed logits (see the module docstring)."""

    name = "noise-regularized"

    def __init__(self, options: NoiseRegularizedOptions | None = None) -> None:
        self.options = options or NoiseRegularizedOptions()

    def select(self, state: StepState) -> Selection:
        level = self.options.noise_scale * noise_level(state.step, state.steps)
        score = confidence(state) if level == 0 else noisy_confidence(state, level)
        cutoff = torch.sort(score, dim=-1).values.gather(1, state.mask_count.long().to(score.device))  # as Purity
        return Selection(keep=~(score < cutoff), scores=score)

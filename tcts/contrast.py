"""Prompt contrast: where a target prompt makes the generator expect other tokens than the picture's.

The masked-generative form of DiffEdit's mask (G. Couairon, J. Verbeek, H. Schwenk and M. Cord, *DiffEdit:
Diffusion-based semantic image editing with mask guidance*, ICLR 2023: the difference of the noise estimates
under the reference and the query prompt marks what the edit changes). Here, for source tokens x:

1. Mask a random ``ratio`` of the positions (one CPU generator per image, seeded ``seed + b`` or the
   image's own seed from a list, as :func:`tcts.engine.make_generators` does, so a batch equals separate runs).
2. One forward of the generator with the source and one with the target prompt (conditional rows only,
   batched together), giving ``log p_src(x_i)`` and ``log p_tgt(x_i)`` at every masked position.
3. Repeat ``samples`` times; the contrast of position i is the mean of ``log p_src(x_i) − log p_tgt(x_i)``
   over the draws in which i was masked (0 where it never was).

A contrast of c nats means the target prompt makes the picture's token e^c times less likely than the source
prompt does: high on the object the edit changes (its colour, its shape, the cells its new size covers or
vacates), about 0 on everything the two prompts agree on. Visible context keeps the map tied to the picture
(a fully masked forward would show only where the prompts would draw things).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .engine import make_generators
from .sampling.step import Conditioning, guided_logits


def positive_rows(cond: Conditioning) -> Conditioning:
    """The condition without its negative prompt (a conditional pass only)."""
    return Conditioning(cond.hidden_states, cond.pooled, cond.micro_conds)


@torch.inference_mode()
def prompt_contrast(model: nn.Module, tokens: torch.Tensor, source: Conditioning, target: Conditioning, *,
                    samples: int = 8, ratio: float = 0.8, seed: int | Sequence[int] = 0,
                    timestep: int = 0) -> torch.Tensor:
    """Contrast map ``[B, h, w]`` in nats (see the module docstring). ``tokens``: finished source tokens
    ``[B, h, w]``; ``source`` / ``target``: the two prompts' conditions (positive rows are used; one row per
    image). ``seed``: image i draws its masks from ``seed + i``, or from ``seed[i]`` when given a list.
    ``timestep`` 0 = the last step of a schedule (Meissonic's step index; aMUSEd ignores it)."""
    if int(samples) != samples or samples < 1:
        raise ValueError(f"prompt contrast samples must be an integer >= 1; got {samples!r}")
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"prompt contrast mask ratio must be in (0, 1]; got {ratio!r}")
    b = tokens.shape[0]
    if source.batch_size != b or target.batch_size != b:
        raise ValueError(f"prompt contrast needs one source and one target row per image: {b} images, "
                         f"{source.batch_size} source and {target.batch_size} target rows")
    device = next(model.parameters()).device
    tokens = tokens.to(device).long()
    both = Conditioning(*(torch.cat([s, t]) for s, t in ((source.hidden_states, target.hidden_states),
                                                        (source.pooled, target.pooled),
                                                        (source.micro_conds, target.micro_conds))))
    generators = make_generators(seed, b)
    total = torch.zeros(tokens.shape, dtype=torch.float32, device=device)
    count = torch.zeros_like(total)
    for _ in range(int(samples)):
        masked = torch.stack([torch.rand(tokens.shape[1:], generator=g) < float(ratio) for g in generators])
        masked = masked.to(device)
        inputs = torch.where(masked, model.mask_token_id, tokens)
        logp = guided_logits(model, torch.cat([inputs, inputs]), both, 1.0, timestep).float().log_softmax(dim=1)
        picked = logp.gather(1, torch.cat([tokens, tokens])[:, None])[:, 0]
        total += torch.where(masked, picked[:b] - picked[b:], 0.0)
        count += masked.float()
    return (total / count.clamp_min(1.0)).cpu()

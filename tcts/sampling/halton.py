"""Halton order (persistent): unmask the grid in a fixed low-discrepancy spatial order (docs/method.md, Halton).

After Besnier et al., *Halton Scheduler for Masked Generative Image Transformer*, ICLR 2025 (public code:
valeoai/Halton-MaskGIT, ``HaltonSampler``). The positions come from the 2-D Halton sequence, base 2 for the
row and base 3 for the column, from index 1 on: point i falls into the cell ``(floor(h·φ₂(i)),
floor(w·φ₃(i)))``, φ_b the radical inverse in base b. The first point to reach a cell sets that cell's place
in the order; points are generated until every cell of the ``h × w`` grid is reached (the public code takes a
fixed 10,000 points, which leave cells of a 64 × 64 grid unreached). The cells are computed in exact integer
arithmetic, so no rounding can move a point to a neighbouring cell.

Each step keeps the next ``unknown − mask_count`` unknown positions in that order (the loop's schedule sets the
count; the paper's own count schedule is ``--schedule arccos``), with the token the loop drew there: no
confidence is involved, so the order depends only on the grid (and, with ``roll``, on the seed), never on
the logits. ``roll`` shifts each image's order cyclically by an offset drawn once per run from the image's
generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..options import option, validate
from .rules import Rule, Selection, StepState, keep_all_but_lowest

__all__ = ["Halton", "HaltonOptions", "halton_order", "halton_points_needed"]


@dataclass(frozen=True)
class HaltonOptions:
    """The options of the Halton order (the CLI's ``--halton-*`` flags, the nodes, the rule)."""

    roll: bool = option(False, "shift each image's Halton order cyclically by a random offset drawn from its seed "
                               "(off: every image uses the same order, as the paper's default)")

    def __post_init__(self) -> None:
        validate(self)


def scaled_radical_inverse(index: int, base: int, size: int) -> int:
    """``floor(size · φ_base(index))``, exactly: φ_base mirrors the base-``base`` digits of ``index`` behind the
    radix point."""
    numerator, denominator = 0, 1
    while index:
        index, digit = divmod(index, base)
        numerator = numerator * base + digit
        denominator *= base
    return numerator * size // denominator


def _cells(h: int, w: int) -> tuple[tuple[int, ...], int]:
    seen = bytearray(h * w)
    order: list[int] = []
    index = 0
    while len(order) < h * w:
        index += 1
        cell = scaled_radical_inverse(index, 2, h) * w + scaled_radical_inverse(index, 3, w)
        if not seen[cell]:
            seen[cell] = 1
            order.append(cell)
    return tuple(order), index


@lru_cache(maxsize=16)
def _cached(h: int, w: int) -> tuple[tuple[int, ...], int]:
    return _cells(h, w)


def halton_order(h: int, w: int) -> torch.Tensor:
    """``[h·w]`` long: the flat positions (``row·w + col``) of an ``h × w`` grid in Halton order."""
    if h < 1 or w < 1:
        raise ValueError(f"the grid must be at least 1 x 1; got {h} x {w}")
    return torch.tensor(_cached(h, w)[0], dtype=torch.long)


def halton_points_needed(h: int, w: int) -> int:
    """How many Halton points (from index 1) it takes to reach every cell of an ``h × w`` grid."""
    return _cached(h, w)[1]


class Halton(Rule):
    """Keep the next unknown positions in Halton order (see the module docstring)."""

    name = "halton"

    def __init__(self, options: HaltonOptions | None = None) -> None:
        self.options = options or HaltonOptions()

    @property
    def key(self) -> str:
        return f"halton:{id(self)}"

    def ranks(self, state: StepState) -> torch.Tensor:
        """``[B, N]`` long: each position's place in its image's order (rolled ones drawn at the first step)."""
        h, w = state.grid
        n = h * w
        ranks = torch.empty(n, dtype=torch.long)
        ranks[halton_order(h, w)] = torch.arange(n)
        ranks = ranks.expand(len(state.generators), n)
        if self.options.roll:
            offsets = state.extras.get(self.key)
            if offsets is None:  # once per run, after the loop's first draw
                offsets = torch.cat([torch.randint(0, n, (1,), generator=g) for g in state.generators])
                state.extras[self.key] = offsets
            ranks = (ranks - offsets[:, None]) % n
        return ranks.to(state.unknown.device)

    def select(self, state: StepState) -> Selection:
        scores = torch.where(state.unknown, -self.ranks(state).float(), torch.inf)
        return Selection(keep=keep_all_but_lowest(scores, state.mask_count), scores=scores)

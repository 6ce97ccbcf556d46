"""Mask-free editing (project default; docs/method.md, Mask-free editing): change one object, keep the rest exactly.

1. Re-run the generator once on the source tokens with the **source** prompt (conditional pass only,
   timestep 0) and capture its cross-attention (``tcts.attention.reencode_attention``; aMUSEd: every
   ``attn2``; Meissonic: the image→text block of every joint attention).
2. The word's map = the sum of the columns of all its BPE pieces (every occurrence), averaged over heads
   and layers, on the transformer grid.
3. Min–max normalise, 3×3 blur (``blur``), threshold: ``mean_std`` keeps ``m > mean + k·std`` (k = 0
   default), ``top_q`` keeps the ``round(top_q·N')`` strongest; never empty (the maximum at least).
   Upsample (nearest) to the token grid, optional ``dilate`` (tokens, 3×3 steps) → region R.
4. ``x = x_src`` with R masked; everything outside R is the loop's ``fixed`` (never re-masked, copied into
   every proposal), so those tokens are **exactly** the source tokens in the result.
5. Regenerate R with the **target** prompt through the one sampling loop with any rule (default: ``tcts``
   when a selector is given, else ``random-revoke``); ``starting_mask_ratio = |R|/N`` makes the schedule
   count over |R|, as the reference inpaint pipeline does.

Outputs: the edited tokens, R (bool token grid), and the normalised word map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .attention import blur3x3, dilate, minmax, reencode_attention, upsample_nearest, word_map
from .sampling import Conditioning, StepReport, make_rule, sample

THRESHOLDS = ("mean_std", "top_q")
STRATEGIES = ("auto", "random-revoke", "tcts", "fas", "tcts-fas", "purity", "uniform")


@dataclass
class RegionOptions:
    """How a word's cross-attention map becomes the edit region."""

    threshold: str = "mean_std"     # mean_std | top_q
    k: float = 0.0                  # mean_std: keep m > mean + k·std
    top_q: float = 0.2              # top_q: keep this fraction of the transformer-grid tokens
    blur: bool = True               # 3x3 box blur of the normalised map before thresholding
    dilate: int = 0                 # grow the region by this many tokens afterwards
    layers: Any = None              # cross-attention layers (default: all)

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"region threshold {self.threshold!r} is unknown; expected one of {', '.join(THRESHOLDS)}")
        if not 0.0 < float(self.top_q) <= 1.0:
            raise ValueError(f"region top_q must be in (0, 1]; got {self.top_q!r}")
        if int(self.dilate) != self.dilate or self.dilate < 0:
            raise ValueError(f"region dilate must be an integer >= 0; got {self.dilate!r}")
        if not -10.0 <= float(self.k) <= 10.0:
            raise ValueError(f"region k must be in [-10, 10] (standard deviations); got {self.k!r}")


@dataclass
class EditRegion:
    region: torch.Tensor            # [B, h, w] bool, True = regenerate
    word_map: torch.Tensor          # [B, h, w] float in [0, 1] (normalised, blurred as thresholded)


@dataclass
class EditResult:
    tokens: torch.Tensor            # [B, h, w] edited tokens
    region: torch.Tensor            # [B, h, w] bool
    word_map: torch.Tensor          # [B, h, w] float in [0, 1]


def region_from_map(raw: torch.Tensor, token_grid: tuple[int, int], options: RegionOptions) -> EditRegion:
    """Word map ``[B, h', w']`` (transformer grid) -> region on the token grid (steps 3-4 above)."""
    b = raw.shape[0]
    m = minmax(raw)
    if options.blur:
        m = blur3x3(m)
    flat = m.reshape(b, -1)
    if options.threshold == "mean_std":
        cut = flat.mean(dim=1, keepdim=True) + float(options.k) * flat.std(dim=1, unbiased=False, keepdim=True)
        region = flat > cut
    else:
        count = max(1, int(round(float(options.top_q) * flat.shape[1])))
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices
        region = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order[:, :count], True)
    empty = ~region.any(dim=1)
    if empty.any():
        region[empty, flat[empty].argmax(dim=1)] = True
    region = upsample_nearest(region.reshape(m.shape), token_grid)
    if options.dilate:
        region = dilate(region, int(options.dilate))
    return EditRegion(region=region, word_map=upsample_nearest(m, token_grid))


def edit_region(model: nn.Module, source_tokens: torch.Tensor, source: Conditioning,
                columns: Sequence[int] | Sequence[Sequence[int]], options: RegionOptions | None = None,
                timestep: int = 0) -> EditRegion:
    """The region of a word in the source image (steps 1-4). ``source``: the source prompt's condition
    (positive rows; a negative condition is ignored)."""
    options = options or RegionOptions()
    captured = reencode_attention(model, source_tokens, source, kinds=("cross",),
                                  layers={"cross": options.layers}, timestep=timestep)
    return region_from_map(word_map(captured, columns), captured.token_grid, options)


def edit_start(source_tokens: torch.Tensor, region: torch.Tensor, mask_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start tokens with R masked, fixed = outside R, starting mask ratio ``[B, 1]`` = |R|/N)."""
    region = region.to(source_tokens.device).bool()
    if region.shape != source_tokens.shape:
        raise ValueError(f"region {tuple(region.shape)} does not match the tokens {tuple(source_tokens.shape)}")
    start = torch.where(region, mask_id, source_tokens)
    ratio = region.reshape(region.shape[0], -1).float().mean(dim=1, keepdim=True)
    return start, ~region, ratio


def resolve_strategy(strategy: str, rule_options: dict[str, Any]) -> str:
    """``auto`` -> ``tcts`` when a selector is given, else ``random-revoke``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"edit strategy {strategy!r} is unknown; expected one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return "tcts" if rule_options.get("selector") is not None else "random-revoke"
    return strategy


@torch.inference_mode()
def mask_free_edit(model: nn.Module, source_tokens: torch.Tensor, source: Conditioning, target: Conditioning,
                   columns: Sequence[int] | Sequence[Sequence[int]], *, generators: list[torch.Generator],
                   strategy: str = "auto", rule_options: dict[str, Any] | None = None, steps: int = 12,
                   cfg: float = 10.0, schedule: str = "linear", choice_temperature: tuple[float, float] = (2.0, 0.0),
                   sampling_temperature: float = 1.0, region: RegionOptions | torch.Tensor | None = None,
                   callback: Callable[[StepReport], None] | None = None) -> EditResult:
    """Edit ``source_tokens`` ``[B, h, w]``: regenerate the word's region under ``target``.

    ``source``/``target``: conditions of the source and target prompts (``target`` with its negative for
    CFG). ``columns``: the word's columns in the *source* prompt (``tcts.attention.word_columns``).
    ``region``: options, or a ready bool region ``[B, h, w]`` (then no attention pass runs)."""
    rule_options = dict(rule_options or {})
    strategy = resolve_strategy(strategy, rule_options)
    rule = make_rule(strategy, **rule_options)
    device = next(model.parameters()).device
    source_tokens = source_tokens.to(device).long()
    mask_id = model.vocab_size - 1
    if (source_tokens == mask_id).any():
        raise ValueError("the source tokens contain masked positions; edit a finished image (VQ Encode or a "
                         "sampler's output)")
    if isinstance(region, torch.Tensor):
        found = EditRegion(region=region.to(device).bool(), word_map=region.float())
    else:
        found = edit_region(model, source_tokens, source, columns, region)
    start, fixed, ratio = edit_start(source_tokens, found.region, mask_id)
    tokens = sample(model, target, rule, steps=steps, tokens=start, fixed=fixed, generators=generators, cfg=cfg,
                    schedule=schedule, choice_temperature=choice_temperature,
                    sampling_temperature=sampling_temperature, starting_mask_ratio=ratio.cpu(), callback=callback)
    return EditResult(tokens=tokens, region=found.region, word_map=found.word_map)

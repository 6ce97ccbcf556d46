"""Mask-free editing (project default; docs/method.md, Mask-free editing): change one object, keep the rest exactly.

1. A map over the source picture, by ``RegionOptions.select``:

   * ``contrast`` (default): the prompt contrast of :mod:`tcts.contrast` (after DiffEdit, Couairon et al.,
     ICLR 2023): where the target prompt makes the generator expect other tokens than the source prompt
     does. It marks what the edit changes, whichever word of the object is given (the word is only
     checked to be in the source prompt).
   * ``object``: the cross-attention of the object the word names: the head noun of the word's noun
     phrase (``tcts.attention.object_columns``: "red" in "a red circle on a striped background" ->
     "circle").
   * ``object+word``: the head noun's and the word's columns together.
   * ``word``: the word's own columns (every occurrence, all its BPE pieces).

   Attention maps come from one re-run of the generator on the source tokens with the **source** prompt
   (conditional pass only, timestep 0; ``tcts.attention.reencode_attention``; aMUSEd: every ``attn2``;
   Meissonic: the image→text block of every joint attention), averaged over heads and layers, summed over
   the columns, on the transformer grid.
2. Min–max normalise, 3×3 blur (``blur``; attention maps only: a contrast map is per token already),
   threshold: ``mean_std`` keeps ``m > mean + k·std`` (k = 0 default), ``top_q`` keeps the
   ``round(top_q·N')`` strongest; never empty (the maximum at least).
3. Upsample (nearest) to the token grid, optional ``dilate`` (tokens, 3×3 steps) → region R.
4. ``x = x_src`` with R masked; everything outside R is the loop's ``fixed`` (never re-masked, copied into
   every proposal), so those tokens are **exactly** the source tokens in the result.
5. Regenerate R with the **target** prompt through the one sampling loop with any rule (default: ``tcts``
   when a selector is given, else ``random-revoke``); ``starting_mask_ratio = |R|/N`` makes the schedule
   count over |R|, as the reference inpaint pipeline does.

Outputs: the edited tokens, R (bool token grid), and the normalised map.

On the shapes world the contrast region matches the edited object best (BENCHMARKS.md, Mask-free editing
on the shapes world); the demo generator's cross-attention is diffuse, so the attention selections follow
the object only loosely.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .attention import (blur3x3, dilate, minmax, object_columns, reencode_attention, upsample_nearest, word_columns,
                        word_map)
from .contrast import positive_rows, prompt_contrast
from .engine import Job, run
from .sampling.step import Conditioning
from .starts import Edit, EncodedImage

THRESHOLDS = ("mean_std", "top_q")
#: what the region follows (module docstring, step 1)
SELECTIONS = ("contrast", "object", "object+word", "word")
STRATEGIES = ("auto", "random-revoke", "tcts", "fas", "tcts-fas", "purity", "uniform", "entropy-bounded")


@dataclass
class RegionOptions:
    """How the edit region is found: which map (``select``) and how it is thresholded."""

    select: str = "contrast"        # contrast | object | object+word | word (module docstring)
    threshold: str = "mean_std"     # mean_std | top_q
    k: float = 0.0                  # mean_std: keep m > mean + k·std
    top_q: float = 0.2              # top_q: keep this fraction of the transformer-grid tokens
    blur: bool = True               # 3x3 box blur of a normalised attention map before thresholding
    dilate: int = 0                 # grow the region by this many tokens afterwards
    layers: Any = None              # cross-attention layers (default: all)
    samples: int = 8                # contrast: masked forwards per prompt
    mask_ratio: float = 0.8         # contrast: fraction of the tokens masked in each forward

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ValueError(f"region select {self.select!r} is unknown; expected one of {', '.join(SELECTIONS)}")
        if int(self.samples) != self.samples or self.samples < 1:
            raise ValueError(f"region contrast samples must be an integer >= 1; got {self.samples!r}")
        if not 0.0 < float(self.mask_ratio) <= 1.0:
            raise ValueError(f"region contrast mask_ratio must be in (0, 1]; got {self.mask_ratio!r}")
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
    word_map: torch.Tensor          # [B, h, w] float in [0, 1]: the map (normalised, blurred as thresholded)


@dataclass
class EditResult:
    tokens: torch.Tensor            # [B, h, w] edited tokens
    region: torch.Tensor            # [B, h, w] bool
    word_map: torch.Tensor          # [B, h, w] float in [0, 1]


def region_columns(word: str, pieces: Sequence[str], prompt: str | None = None, select: str = "contrast") -> list[int]:
    """The prompt columns whose attention the region ``select`` reads (module docstring, step 1): the word's
    (``word``; also ``contrast``, which reads no columns but checks the word), its object's head noun
    (``object``) or both (``object+word``). Raises naming the prompt's words when the word is absent."""
    if select not in SELECTIONS:
        raise ValueError(f"region select {select!r} is unknown; expected one of {', '.join(SELECTIONS)}")
    own = word_columns(word, pieces, prompt)
    if select in ("word", "contrast"):
        return own
    head = object_columns(word, pieces, prompt)
    return head if select == "object" else sorted(set(head) | set(own))


def region_from_map(raw: torch.Tensor, token_grid: tuple[int, int], options: RegionOptions) -> EditRegion:
    """Map ``[B, h', w']`` (transformer grid) -> region on the token grid (steps 2-3 above)."""
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
                target: Conditioning | None = None, seed: int | Sequence[int] = 0) -> EditRegion:
    """The edit region in the source image (steps 1-3). ``source`` / ``target``: the two prompts'
    conditions (positive rows; negatives are ignored; ``target`` is needed by ``select="contrast"``);
    ``columns``: from :func:`region_columns` (unused by ``contrast``); ``seed``: the contrast's masks."""
    options = options or RegionOptions()
    if options.select == "contrast":
        if target is None:
            raise ValueError("region select 'contrast' needs the target prompt's condition; pass target= (or "
                             "choose select='object', 'object+word' or 'word')")
        raw = prompt_contrast(model, source_tokens, positive_rows(source), positive_rows(target),
                              samples=options.samples, ratio=options.mask_ratio, seed=seed)
        return region_from_map(raw, tuple(source_tokens.shape[1:]), dataclasses.replace(options, blur=False))
    captured = reencode_attention(model, source_tokens, source, kinds=("cross",),
                                  layers={"cross": options.layers})
    return region_from_map(word_map(captured, columns), captured.token_grid, options)


def resolve_strategy(strategy: str, has_selector: bool) -> str:
    """``auto`` -> ``tcts`` when a selector is given, else ``random-revoke``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"edit strategy {strategy!r} is unknown; expected one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return "tcts" if has_selector else "random-revoke"
    return strategy


@dataclass
class EditRequest:
    """What to edit: the picture, its prompt (the source condition, positive rows), the columns of the word in
    that prompt (:func:`region_columns`), and how to find the region (or a ready bool region)."""

    source: EncodedImage
    source_condition: Conditioning
    columns: Sequence[int] | Sequence[Sequence[int]]
    region: RegionOptions | torch.Tensor = dataclasses.field(default_factory=RegionOptions)


@torch.inference_mode()
def mask_free_edit(model: nn.Module, request: EditRequest, target: Job, vq_factor: int) -> EditResult:
    """Regenerate the word's region of ``request.source`` as the ``target`` job says (its condition is the
    target prompt with its negative, its rule, sampling, seed and callback; its start is replaced by the
    region). Every token outside the region stays exactly the source's."""
    device = next(model.parameters()).device
    tokens = request.source.tokens.to(device).long()
    if (tokens == model.mask_token_id).any():
        raise ValueError("the source tokens contain masked positions; edit a finished image (VQ Encode or a "
                         "sampler's output)")
    if isinstance(request.region, torch.Tensor):
        found = EditRegion(region=request.region.to(device).bool(), word_map=request.region.float())
    else:
        found = edit_region(model, tokens, request.source_condition, request.columns, request.region,
                            target=target.condition, seed=target.seed)
    job = dataclasses.replace(target, start=Edit(image=request.source, region=found.region))
    return EditResult(tokens=run(model, job, vq_factor), region=found.region, word_map=found.word_map)

"""Attention capture, word lookups, the FAS frequency statistic and attention maps.

**Capture.** ``capture_attention(model, layers=..., kinds=...)`` installs observers on the generator's
attention modules (``Attention.observer`` in ``models/uvit.py``, ``JointAttention.observer`` in
``models/meissonic.py``) and yields an :class:`AttentionAccumulator`. An observer receives the per-head
queries and keys of one layer, computes ``softmax(q kᵀ / √d)`` in fp32 for the conditional rows only
(the last ``batch`` rows of the forward: the loop batches ``[negative; positive]``), averages over
heads and adds the result to a running sum, so memory stays one ``[B, N', N']`` (self) and one
``[B, N', L]`` (cross) buffer plus one layer's ``[B, heads, N', S]`` transient, whatever the number
of layers. The attention *output* is always the fused SDPA result, so the logits are bit-identical
with capture on and off (tests/test_attention.py).

Where the attentions are (``attention_sites``):

* aMUSEd (``UVit2DTransformer``): layer ``i`` = ``transformer_layers.i``; ``self`` = its ``attn1``,
  ``cross`` = its ``attn2`` (image queries over the 77 text states). The ``attention_blocks`` of the
  down/up ``UVitBlock`` are **not** captured: both their attentions are cross-attentions to a
  SiLU-mapped text projection at the conv stage (12 heads, 768 wide), a different representation
  from the main stack; the maps are defined on the ``attn2`` layers of the main stack
  (docs/method.md, Attention capture).
* Meissonic (``MeissonicTransformer``): layer ``i < num_layers`` = ``transformer_blocks.i.attn``, then
  ``single_transformer_blocks.(i - num_layers).attn``. One joint softmax over ``[text; image]`` keys
  (text first, ``L`` = the text length, 77); only image queries are computed. ``self`` = the image→image
  block ``[L:, L:]`` with every row renormalised to sum 1 (per head, before the head mean; computed as
  the softmax over the image keys alone, which is the same thing); ``cross`` = the image→text block
  ``[L:, :L]`` as it is (the share of attention that goes to each text token).
* Any other model may define ``attention_sites()`` returning :class:`AttentionSite` objects.

Default layers: ``self`` the first ``round(2L/3)`` layers (15 of aMUSEd's 22, 28 of Meissonic's 42;
docs/method.md, FAS), ``cross`` all layers. Rows are queries on the *transformer* grid ``(h', w')``; models
with a 2×2 downsample (aMUSEd-512, Meissonic) have ``h' = h/2``: :meth:`CapturedAttention.to_token_grid`
upsamples per-query maps to the token grid with nearest neighbours.

**FAS statistic** (project definition; docs/method.md, FAS): per query ``i`` the attention row as an image
``A_i (h' × w')``; ``fft_hf`` = fraction of its FFT power above ``cutoff`` × Nyquist radius; ``entropy``
and ``locality`` are negated so that diffuse / long-range rows score low. LOW = the ``round(q·N')``
lowest scores of each image (rank-based, so flat maps still split exactly).

**Words.** CLIP BPE marks the last piece of every word with ``</w>``, so the words of a prompt and the
columns of their pieces can be read from the token *strings* alone (``prompt_words``); ``word_columns``
finds every occurrence of a word or phrase (all its pieces) and raises naming the prompt's words when
it is absent.
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import parse_layers
from .sampling.fas_options import FAS_STATISTICS, FASOptions
from .sampling.step import guided_logits

KINDS = ("self", "cross")


# --------------------------------------------------------------------------------------------------
# where the attentions are
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionSite:
    """One layer of a generator: its self/cross attention modules, or one joint (text-first) module."""

    index: int
    name: str
    self_module: nn.Module | None = None
    cross_module: nn.Module | None = None
    joint_module: nn.Module | None = None


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """The capturable layers of a generator, in forward order (see the module docstring)."""
    custom = getattr(model, "attention_sites", None)
    if callable(custom):
        return list(custom())
    if hasattr(model, "transformer_layers"):
        return [AttentionSite(i, f"transformer_layers.{i}", self_module=layer.attn1, cross_module=layer.attn2)
                for i, layer in enumerate(model.transformer_layers)]
    if hasattr(model, "transformer_blocks") and hasattr(model, "single_transformer_blocks"):
        dual = [(f"transformer_blocks.{i}", b.attn) for i, b in enumerate(model.transformer_blocks)]
        single = [(f"single_transformer_blocks.{i}", b.attn) for i, b in enumerate(model.single_transformer_blocks)]
        return [AttentionSite(i, name, joint_module=m) for i, (name, m) in enumerate(dual + single)]
    raise ValueError(f"attention capture does not know where the attentions of {type(model).__name__} are "
                     "(give the model an attention_sites() method)")


def default_layers(kind: str, num_layers: int) -> list[int]:
    """``self``: the first ``round(2L/3)`` layers (at least one); ``cross``: all layers."""
    if kind == "self":
        return list(range(max(1, round(2 * num_layers / 3))))
    return list(range(num_layers))


def resolve_layers(kind: str, layers: Sequence[int] | str | None, num_layers: int) -> list[int]:
    """Validated, sorted, de-duplicated layer indices for one kind."""
    parsed = parse_layers(layers) if isinstance(layers, str) or layers is None else list(layers)
    if parsed is None:
        return default_layers(kind, num_layers)
    if parsed == "all":
        return list(range(num_layers))
    out = set()
    for i in parsed:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise ValueError(f"{kind}-attention layer {i} is out of range: this model has {num_layers} attention "
                             f"layers (0..{num_layers - 1})")
        out.add(j)
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------------

@dataclass
class CapturedAttention:
    """Head- and layer-averaged attention of the conditional rows of one (or more) forwards.

    ``self_attention`` ``[B, N', N']`` (row = query, row-major over the transformer grid ``grid``);
    ``cross_attention`` ``[B, N', L]`` (image query -> text token). Either is None when not captured.
    """

    self_attention: torch.Tensor | None
    cross_attention: torch.Tensor | None
    grid: tuple[int, int]
    token_grid: tuple[int, int]
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    forwards: int = 1

    def to_token_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-query values ``[B, N']`` or ``[B, h', w']`` -> ``[B, h, w]`` (nearest upsampling)."""
        return upsample_nearest(values.reshape(values.shape[0], *self.grid), self.token_grid)


class AttentionAccumulator:
    """Running sums of head-averaged attention probabilities, filled by the observers."""

    def __init__(self, model: nn.Module, layers: Mapping[str, Sequence[int]], batch: int | None) -> None:
        self.layers = {k: tuple(v) for k, v in layers.items()}
        self.batch = batch
        self.multiple = int(getattr(model, "token_grid_multiple", 1))
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {kind: 0 for kind in layers}
        self.token_grid: tuple[int, int] | None = None
        self.text_len: int | None = None
        self.forwards = 0

    # -- hooks ----------------------------------------------------------------------------------
    def before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        text = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
        self.token_grid = (int(ids.shape[1]), int(ids.shape[2]))
        self.text_len = None if text is None else int(text.shape[1])
        self.forwards += 1

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.batch is None else t[t.shape[0] - self.batch:]

    @staticmethod
    def _logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``q kᵀ / √d`` in fp32 (the scale is applied to q: one pass over N·d instead of N²)."""
        return (q.float() * (q.shape[-1] ** -0.5)) @ k.float().transpose(-1, -2)

    @classmethod
    def _probs(cls, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.softmax(cls._logits(q, k), dim=-1)

    def _add(self, kind: str, value: torch.Tensor) -> None:
        value = value.detach()
        if kind in self.sums:
            self.sums[kind] += value
        else:
            self.sums[kind] = value.clone()
        self.counts[kind] += 1

    def observe_self(self, q: torch.Tensor, k: torch.Tensor) -> None:
        self._add("self", self._probs(self._rows(q), self._rows(k)).mean(dim=1))

    def observe_cross(self, q: torch.Tensor, k: torch.Tensor) -> None:
        self._add("cross", self._probs(self._rows(q), self._rows(k)).mean(dim=1))

    def observe_joint(self, q: torch.Tensor, k: torch.Tensor, *, want_self: bool, want_cross: bool) -> None:
        """Image queries over the joint ``[text; image]`` keys. The image→image block with its rows
        renormalised equals a softmax over the image keys alone, so ``self`` never needs the text keys;
        ``cross`` is the text columns of the joint softmax, ``exp(logit − logsumexp(all logits))``."""
        text = self.text_len or 0
        q, k = self._rows(q)[:, :, text:], self._rows(k)
        if want_self and not want_cross:
            self._add("self", self._probs(q, k[:, :, text:]).mean(dim=1))
            return
        logits = self._logits(q, k)
        if want_cross:
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            self._add("cross", torch.exp(logits[..., :text] - lse).mean(dim=1))
        if want_self:
            self._add("self", torch.softmax(logits[..., text:], dim=-1).mean(dim=1))

    # -- result ---------------------------------------------------------------------------------
    def result(self) -> CapturedAttention:
        """The means so far (over heads, layers and forwards)."""
        if self.forwards == 0 or self.token_grid is None:
            raise RuntimeError("no generator forward ran inside capture_attention(); nothing was captured")
        means = {kind: self.sums[kind] / self.counts[kind] for kind in self.sums}
        queries = next(iter(means.values())).shape[1] if means else None
        h, w = self.token_grid
        grid = (-(-h // self.multiple), -(-w // self.multiple))
        if queries is not None and grid[0] * grid[1] != queries:
            if h * w == queries:
                grid = (h, w)
            else:
                raise RuntimeError(f"captured {queries} attention queries for a {h}x{w} token grid; cannot "
                                   "place them on a grid")
        return CapturedAttention(self_attention=means.get("self"), cross_attention=means.get("cross"), grid=grid,
                                 token_grid=(h, w), layers=dict(self.layers), forwards=self.forwards)


def _install(module: nn.Module, observer) -> None:
    if not hasattr(module, "observer"):
        raise ValueError(f"{type(module).__name__} has no observer hook; it cannot be captured")
    if module.observer is not None:
        raise RuntimeError("attention capture is already active on this model (nested capture_attention)")
    module.observer = observer


@contextmanager
def capture_attention(model: nn.Module, layers: Sequence[int] | str | Mapping[str, Any] | None = None,
                      kinds: Sequence[str] | str = ("self",), batch: int | None = None
                      ) -> Iterator[AttentionAccumulator]:
    """Capture head/layer-averaged attention probabilities during the forwards run inside the block.

    ``kinds``: ``"self"`` and/or ``"cross"``. ``layers``: indices (or a spec string, see
    :func:`parse_layers`) applied to every kind, or a mapping kind -> indices; None = the defaults.
    ``batch``: keep only the last ``batch`` rows of each forward (the conditional rows of a CFG batch
    ``[negative; positive]``); None keeps all rows. Yields the accumulator; call ``.result()``.
    The model's outputs are unchanged (observers only read q and k).
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"attention kinds must be among {KINDS}; got {kinds!r}")
    sites = attention_sites(model)
    per_kind = layers if isinstance(layers, Mapping) else {k: layers for k in kinds}
    resolved = {k: resolve_layers(k, per_kind.get(k), len(sites)) for k in kinds}
    acc = AttentionAccumulator(model, resolved, batch)
    installed: list[nn.Module] = []
    hook = model.register_forward_pre_hook(acc.before_forward, with_kwargs=True)
    try:
        for site in sites:
            want_self = site.index in resolved.get("self", ())
            want_cross = site.index in resolved.get("cross", ())
            if site.joint_module is not None:
                if want_self or want_cross:
                    _install(site.joint_module, partial(acc.observe_joint, want_self=want_self, want_cross=want_cross))
                    installed.append(site.joint_module)
                continue
            for want, module, observer in ((want_self, site.self_module, acc.observe_self),
                                           (want_cross, site.cross_module, acc.observe_cross)):
                if want:
                    if module is None:
                        raise ValueError(f"layer {site.index} ({site.name}) has no such attention to capture")
                    _install(module, observer)
                    installed.append(module)
        yield acc
    finally:
        for module in installed:
            module.observer = None
        hook.remove()


@dataclass(frozen=True)
class AttentionRequest:
    """What a rule wants captured during one step's forward (``Rule.attention``)."""

    kinds: tuple[str, ...] = ("self",)
    layers: Any = None


@contextmanager
def step_capture(model: nn.Module, request: AttentionRequest | None, batch: int
                 ) -> Iterator[AttentionAccumulator | None]:
    """``capture_attention`` for one loop step, or a no-op yielding None when nothing is requested."""
    if request is None:
        yield None
        return
    with capture_attention(model, layers=request.layers, kinds=request.kinds, batch=batch) as acc:
        yield acc


@torch.inference_mode()
def reencode_attention(model: nn.Module, tokens: torch.Tensor, cond: Any, *, kinds: Sequence[str] = ("self", "cross"),
                       layers: Any = None, timestep: int = 0) -> CapturedAttention:
    """Run the generator once on ``tokens`` ``[B, h, w]`` with the positive condition only (no CFG) and
    return the captured attention. ``cond`` is a ``sampling.Conditioning``; ``timestep`` 0 = the last
    step of a schedule (Meissonic's step index; aMUSEd ignores it)."""
    device = next(model.parameters()).device
    with capture_attention(model, layers=layers, kinds=kinds, batch=tokens.shape[0]) as acc:
        guided_logits(model, tokens.to(device), cond, 1.0, timestep)
    return acc.result()


# --------------------------------------------------------------------------------------------------
# grids and small image ops
# --------------------------------------------------------------------------------------------------

def upsample_nearest(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, h', w']`` -> ``[B, h, w]`` nearest-neighbour (a no-op when the sizes agree)."""
    if tuple(values.shape[1:]) == tuple(size):
        return values
    dtype = values.dtype
    out = F.interpolate(values[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    return out.to(dtype) if dtype == torch.bool or not dtype.is_floating_point else out


def blur3x3(maps: torch.Tensor) -> torch.Tensor:
    """3×3 box blur of ``[B, h, w]`` maps (replicate padding, so the mean level is kept at borders)."""
    x = F.pad(maps[:, None].float(), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(x, 3, stride=1)[:, 0]


def dilate(mask: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Grow a bool ``[B, h, w]`` mask by ``iterations`` tokens (3×3 max-pool)."""
    x = mask[:, None].float()
    for _ in range(max(0, int(iterations))):
        x = F.max_pool2d(x, 3, stride=1, padding=1)
    return x[:, 0] > 0.5


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``[B, ...]`` to [0, 1] (a constant map becomes 0)."""
    flat = maps.reshape(maps.shape[0], -1).float()
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(maps.shape)


# --------------------------------------------------------------------------------------------------
# FAS statistic and groups
# --------------------------------------------------------------------------------------------------

def frequency_statistic(self_attention: torch.Tensor, grid: tuple[int, int], statistic: str = "fft_hf",
                        cutoff: float = 0.5) -> torch.Tensor:
    """Per-query score ``[B, N']`` from self-attention ``[B, N', N']``; LOW-frequency tokens score low.

    ``fft_hf``: ``Σ_{ρ > cutoff·0.5} |FFT2(A_i)|² / Σ |FFT2(A_i)|²`` with ``ρ = √(fy² + fx²)`` in cycles
    per token (Nyquist 0.5). ``entropy``: ``Σ_j A_ij log A_ij`` (= −entropy). ``locality``:
    ``−Σ_j A_ij ‖pos_i − pos_j‖`` (grid units).
    """
    if statistic not in FAS_STATISTICS:
        raise ValueError(f"FAS statistic {statistic!r} is unknown; expected one of {', '.join(FAS_STATISTICS)}")
    b, n, m = self_attention.shape
    h, w = grid
    if n != h * w or m != h * w:
        raise ValueError(f"self-attention is {n}x{m} but the grid {h}x{w} has {h * w} tokens")
    a = self_attention.float()
    if statistic == "fft_hf":
        if not 0.0 <= cutoff <= math.sqrt(2):
            raise ValueError(f"FAS cutoff must be in [0, 1.41] (fraction of the Nyquist radius); got {cutoff!r}")
        power = torch.fft.fft2(a.reshape(b, n, h, w)).abs().square()
        fy, fx = torch.fft.fftfreq(h, device=a.device), torch.fft.fftfreq(w, device=a.device)
        rho = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        high = (rho > cutoff * 0.5).to(power.dtype)
        return (power * high).sum(dim=(-2, -1)) / power.sum(dim=(-2, -1)).clamp_min(1e-20)
    if statistic == "entropy":
        return (a * torch.log(a.clamp_min(1e-12))).sum(dim=-1)
    ys, xs = torch.meshgrid(torch.arange(h, device=a.device), torch.arange(w, device=a.device), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=-1).float()
    dist = torch.cdist(pos, pos)
    return -(a * dist).sum(dim=-1)


def low_frequency_groups(score: torch.Tensor, grid: tuple[int, int], q: float = 0.5,
                         smooth: bool = False) -> torch.Tensor:
    """LOW group ``[B, N']`` bool: the ``round(q·N')`` lowest scores of each image (ties by position).

    ``smooth``: 3×3 blur of the score map first."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"FAS q (LOW quantile) must be in [0, 1]; got {q!r}")
    b, n = score.shape
    if smooth:
        score = blur3x3(score.reshape(b, *grid)).reshape(b, n)
    count = int(round(q * n))
    order = torch.sort(score, dim=-1, stable=True).indices
    low = torch.zeros_like(score, dtype=torch.bool)
    low.scatter_(1, order[:, :count], True)
    return low


def fas_low_map(captured: CapturedAttention, statistic: str = "fft_hf", cutoff: float = 0.5, q: float = 0.5,
                smooth: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(LOW ``[B, h, w]`` bool, score ``[B, h, w]``) on the token grid from captured self-attention."""
    if captured.self_attention is None:
        raise ValueError("FAS needs captured self-attention (kinds=('self',))")
    score = frequency_statistic(captured.self_attention, captured.grid, statistic, cutoff)
    low = low_frequency_groups(score, captured.grid, q, smooth)
    return captured.to_token_grid(low), captured.to_token_grid(score)


# --------------------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.IGNORECASE)


def _is_special(piece: str) -> bool:
    return piece.startswith("<|") and piece.endswith("|>")


def token_pieces(tokenizer: Any, token_ids: Sequence[int] | torch.Tensor) -> list[str]:
    """BPE piece strings of one row of token ids (``tokenizer.convert_ids_to_tokens``)."""
    ids = token_ids.tolist() if torch.is_tensor(token_ids) else list(token_ids)
    return [str(p) for p in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]


def prompt_words(pieces: Sequence[str]) -> list[tuple[str, list[int]]]:
    """``[(word, [columns of its pieces])]`` in prompt order; specials (start/end/pad) are skipped.

    CLIP BPE ends the last piece of every pre-tokenised word with ``</w>``; a word cut off by the
    77-token truncation is closed at the end."""
    words: list[tuple[str, list[int]]] = []
    text, cols = "", []
    for col, piece in enumerate(pieces):
        if _is_special(piece):
            if cols:
                words.append((text, cols))
                text, cols = "", []
            continue
        ends = piece.endswith("</w>")
        text += piece[:-4] if ends else piece
        cols.append(col)
        if ends:
            words.append((text, cols))
            text, cols = "", []
    if cols:
        words.append((text, cols))
    return words


def split_words(text: str) -> list[str]:
    """A word or phrase as CLIP pre-tokenises it (lower case; letters, single digits, punctuation)."""
    return [m.group(0) for m in _WORD_RE.finditer(text.lower())]


def _occurrences(word: str, words: Sequence[tuple[str, list[int]]], prompt: str | None) -> list[range]:
    """Word-index ranges of every occurrence of ``word`` (or a phrase) among the prompt's ``words``."""
    query = split_words(word)
    if not query:
        raise ValueError(f"no word given (got {word!r}); name a word of the prompt")
    texts = [w for w, _ in words]
    found = [range(start, start + len(query)) for start in range(len(words) - len(query) + 1)
             if texts[start:start + len(query)] == query]
    if not found:
        shown = prompt if prompt is not None else " ".join(texts)
        listing = ", ".join(dict.fromkeys(texts)) or "(none)"
        raise ValueError(f"the word {word!r} is not in the prompt {shown!r}; its words are: {listing}")
    return found


def word_columns(word: str, pieces: Sequence[str], prompt: str | None = None) -> list[int]:
    """Columns (0 = start token) of every occurrence of ``word`` (or a phrase) in the prompt, all its
    BPE pieces. Raises ``ValueError`` naming the prompt's words when it does not occur."""
    words = prompt_words(pieces)
    return sorted({c for span in _occurrences(word, words, prompt) for i in span for c in words[i][1]})


#: Closed-class English words that are never part of a noun phrase's modifiers or head: determiners,
#: pronouns, prepositions and spatial relation words, conjunctions, auxiliaries. A noun phrase is a run of
#: other words; its last word is its head ("a large red circle left of ..." -> "large red circle", head
#: "circle"). Lower case, as :func:`split_words` gives them.
PHRASE_BREAKS = frozenset("""
a an the this that these those some any each every no another other its their his her my your our
one two three four five six seven eight nine ten several many few
it they he she we you i me him them us who which what whose
of on in at to from by with without into onto over under above below beneath behind beside besides between
near next across along around through toward towards against among upon within inside outside off out up down
left right top bottom front back middle center centre
and or but nor while whereas
is are was were be been being am has have had do does did will would can could should may might must
as than like
""".split())


def _is_phrase_word(text: str) -> bool:
    return text not in PHRASE_BREAKS and bool(re.fullmatch(r"[^\W\d_]+", text))


def phrase_head(words: Sequence[tuple[str, list[int]]], index: int) -> int:
    """The word index of the head of the noun phrase that word ``index`` belongs to: the last word of the
    run of phrase words (not in :data:`PHRASE_BREAKS`, letters only) that contains it. A word outside every
    phrase (a break word, a digit, punctuation) is its own head."""
    if not _is_phrase_word(words[index][0]):
        return index
    head = index
    while head + 1 < len(words) and _is_phrase_word(words[head + 1][0]):
        head += 1
    return head


def object_columns(word: str, pieces: Sequence[str], prompt: str | None = None) -> list[int]:
    """Columns of the object a word names: for every occurrence of ``word`` (or a phrase), the columns of the
    head noun of the noun phrase its last word belongs to. An adjective selects its noun ("red" in "a red
    circle on a striped background" -> "circle", not "background"); a noun is its own head, so its columns
    are :func:`word_columns`'. The grouping reads the prompt's words only (:data:`PHRASE_BREAKS`), no
    grammar of a particular world. Raises like :func:`word_columns`."""
    words = prompt_words(pieces)
    heads = {phrase_head(words, span[-1]) for span in _occurrences(word, words, prompt)}
    return sorted({c for h in heads for c in words[h][1]})


def word_map(captured: CapturedAttention, columns: Sequence[int] | Sequence[Sequence[int]]) -> torch.Tensor:
    """Cross-attention of a word, summed over its columns: ``[B, h', w']`` on the transformer grid.

    ``columns``: one list for all images, or one list per image."""
    cross = captured.cross_attention
    if cross is None:
        raise ValueError("word maps need captured cross-attention (kinds=('cross',))")
    b = cross.shape[0]
    per_image = [list(c) for c in columns] if columns and not isinstance(columns[0], int) else [list(columns)] * b
    if len(per_image) != b:
        raise ValueError(f"got word columns for {len(per_image)} images but attention for {b}")
    maps = []
    for row, cols in zip(cross, per_image):
        bad = [c for c in cols if not 0 <= c < row.shape[-1]]
        if bad:
            raise ValueError(f"word columns {bad} are outside the {row.shape[-1]} text positions")
        maps.append(row[:, cols].sum(dim=-1))
    return torch.stack(maps).reshape(b, *captured.grid)


# --------------------------------------------------------------------------------------------------
# maps for people: masks and heat-map overlays
# --------------------------------------------------------------------------------------------------

# a perceptually ordered dark-blue -> cyan -> yellow -> red ramp (viridis-like ends, jet-like middle)
_RAMP = torch.tensor([[0.05, 0.03, 0.35], [0.10, 0.35, 0.80], [0.10, 0.75, 0.80], [0.55, 0.90, 0.30],
                      [0.98, 0.85, 0.15], [0.90, 0.25, 0.10]])


def heatmap(values: torch.Tensor) -> torch.Tensor:
    """``[B, h, w]`` values in [0, 1] -> RGB ``[B, h, w, 3]`` with a blue-to-red colour ramp."""
    v = values.float().clamp(0, 1) * (len(_RAMP) - 1)
    lo = v.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (v - lo)[..., None]
    ramp = _RAMP.to(values.device)
    return ramp[lo] * (1 - frac) + ramp[lo + 1] * frac


def to_pixels(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Token-grid map ``[B, h, w]`` -> pixel map ``[B, H, W]`` (nearest, one token = one square)."""
    return upsample_nearest(values.float(), size)


def overlay(values: torch.Tensor, size: tuple[int, int], image: torch.Tensor | None = None,
            alpha: float = 0.55) -> torch.Tensor:
    """Heat-map IMAGE ``[B, H, W, 3]`` of a ``[B, h, w]`` map in [0, 1], blended over ``image`` (same
    size, ``[B or 1, H, W, 3]``) when given."""
    heat = heatmap(to_pixels(values, size))
    if image is None:
        return heat
    if tuple(image.shape[1:3]) != tuple(size):
        raise ValueError(f"overlay image is {image.shape[2]}x{image.shape[1]} px but the map is for "
                         f"{size[1]}x{size[0]} px")
    return (1 - alpha) * image[..., :3].float().to(heat.device) + alpha * heat


@dataclass
class AttentionMaps:
    """Maps of one generation on the token grid: the word's cross-attention (min-max normalised, None
    when no word was asked for), the FAS LOW group and its statistic (min-max normalised)."""

    word: torch.Tensor | None
    low_frequency: torch.Tensor
    statistic: torch.Tensor
    captured: CapturedAttention | None = None


def attention_maps(model: nn.Module, tokens: torch.Tensor, cond: Any, *,
                   columns: Sequence[int] | Sequence[Sequence[int]] | None = None, fas: FASOptions | None = None,
                   cross_layers: Any = None, timestep: int = 0) -> AttentionMaps:
    """Re-run the generator once on final ``tokens`` with the prompt and derive the maps (the LOW group as
    FAS with options ``fas`` would split it; the word's cross-attention on ``cross_layers``).

    Re-encoding needs only model + condition + tokens, so it works on any token grid (a generation, a
    VQ-encoded photo, an edit) whatever sampler made it."""
    fas = fas or FASOptions()
    kinds = ("self", "cross") if columns is not None else ("self",)
    layers = {"self": parse_layers(fas.layers), "cross": cross_layers}
    captured = reencode_attention(model, tokens, cond, kinds=kinds, layers=layers, timestep=timestep)
    low, score = fas_low_map(captured, fas.statistic, fas.cutoff, fas.q, fas.smooth)
    word = None
    if columns is not None:
        word = captured.to_token_grid(minmax(word_map(captured, columns)))
    return AttentionMaps(word=word, low_frequency=low, statistic=minmax(score), captured=captured)

"""The TCTS token selector: a transformer that reads a fully predicted token map and the prompt and says,
per token, how likely it is to be *wrong* ("changed": it differs from what a real image would have there).

Architecture (docs/method.md, TCTS: the token selector; after ``Text2Logit`` of the first author's 2022
prototype code; sizes are configurable):

- **input**: the generator's fully predicted token map x̂ ``[B, h, w]`` (codebook ids, no mask tokens),
  embedded with ``nn.Embedding(codebook_size, width)`` plus a learned 2-D position embedding (one row and
  one column table, ``max_grid`` long);
- **text**: the generator's own text-encoder hidden states ``[B, 77, text_hidden_size]`` (what the loop's
  ``Conditioning.hidden_states`` holds), projected to ``width`` and read through cross-attention; a learned
  **null** text embedding ``[77, text_hidden_size]`` stands in for the prompt under caption dropout and for
  selector guidance;
- **time**: the sampling progress after the current step, ``t = (step + 1) / steps`` in (0, 1], as a
  sinusoidal embedding of ``1000·t`` -> MLP, fed to every block through adaptive LayerNorm (AdaLN: a zero-
  initialised SiLU -> Linear gives shift/scale, so a fresh block starts as a plain pre-norm block);
- **body**: ``num_layers`` blocks, each AdaLN -> self-attention -> AdaLN -> cross-attention -> LayerNorm ->
  MLP (``mlp_ratio``×, GELU), all residual; no dropout;
- **head**: LayerNorm -> Linear(width, 1): the logit of P(changed). Use :meth:`TokenSelector.prob_changed`
  (sigmoid) at inference; the keep-score of TCTS is ``1 - P(changed)``.

A selector folder holds ``model.safetensors`` + ``config.json`` (:func:`save_selector` /
:func:`load_selector`). The config records what ties a selector to its generator (``codebook_size``,
``text_hidden_size``, ``text_length``) and the largest token grid it has position embeddings for.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write
from ..checkpoints import CheckpointError, load_strict, read_json, read_safetensors

CLASS_NAME = "TCTSTokenSelector"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class SelectorMismatchError(CheckpointError):
    """A selector does not fit the generator it is used with (codebook size or text width differ)."""


@dataclass
class SelectorConfig:
    """Everything needed to rebuild a selector; saved as ``config.json`` beside the weights."""

    codebook_size: int                   # the generator's codebook size K (token ids 0 .. K-1)
    text_hidden_size: int                # the generator's text-encoder width (CLIP hidden_states[-2])
    text_length: int = 77                # text tokens per prompt (CLIP pads to 77)
    hidden_size: int = 512               # transformer width
    num_layers: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    max_grid: tuple[int, int] = (64, 64)  # largest token grid (rows, cols) with a position embedding
    time_embed_dim: int = 256            # sinusoidal features of the progress before the time MLP
    generator_family: str = ""           # informational: the family it was trained for ("amused", …)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (training settings, …)

    def __post_init__(self) -> None:
        self.max_grid = (int(self.max_grid[0]), int(self.max_grid[1]))
        for name in ("codebook_size", "text_hidden_size", "text_length", "hidden_size", "num_heads", "time_embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"selector {name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_layers, int) or self.num_layers < 0:
            raise ValueError(f"selector num_layers must be an integer >= 0, got {self.num_layers!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"selector hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if min(self.max_grid) < 1:
            raise ValueError(f"selector max_grid must be positive, got {self.max_grid}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["max_grid"] = list(self.max_grid)
        return {"_class_name": CLASS_NAME, "format_version": FORMAT_VERSION, **out}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "config") -> "SelectorConfig":
        if data.get("_class_name") != CLASS_NAME:
            raise CheckpointError(f"{source} is not a TCTS selector config (_class_name is "
                                  f"{data.get('_class_name')!r}, expected {CLASS_NAME!r})")
        if int(data.get("format_version", 1)) > FORMAT_VERSION:
            raise CheckpointError(f"{source} has selector format {data['format_version']}; this tcts reads up to "
                                  f"{FORMAT_VERSION} (update tcts)")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: invalid selector config: {exc}") from exc


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of ``1000·t`` (``t`` = progress in [0, 1]) -> ``[B, dim]`` fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = (t.float() * 1000.0)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def progress_tensor(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar or ``[B]`` progress value -> ``[B]`` fp32 on ``device``."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).to(device)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"selector time has {t.numel()} values for a batch of {batch}")
    return t


class AdaLayerNorm(nn.Module):
    """``LayerNorm(x) * (1 + scale(t)) + shift(t)``; the modulation starts at zero (a plain LayerNorm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(temb)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim, bias=False)   # a key bias cannot change softmax: no gradient signal
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(context)), heads(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class SelectorBlock(nn.Module):
    """AdaLN -> self-attention -> AdaLN -> cross-attention -> LayerNorm -> MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        inner = int(dim * mlp_ratio)
        self.norm1 = AdaLayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads)
        self.norm2 = AdaLayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x, temb))
        x = x + self.cross_attn(self.norm2(x, temb), text)
        return x + self.mlp(self.norm3(x))


class TokenSelector(nn.Module):
    """``forward(tokens [B, h, w], text [B, L, D], t [B] or float) -> logits [B, h, w]`` of P(changed)."""

    def __init__(self, config: SelectorConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, SelectorConfig):
            config = SelectorConfig(**dict(config))
        self.config = config
        dim = config.hidden_size
        self.codebook_size = config.codebook_size
        self.text_hidden_size = config.text_hidden_size
        self.token_embed = nn.Embedding(config.codebook_size, dim)
        self.row_embed = nn.Parameter(torch.zeros(config.max_grid[0], dim))
        self.col_embed = nn.Parameter(torch.zeros(config.max_grid[1], dim))
        self.null_text = nn.Parameter(torch.zeros(config.text_length, config.text_hidden_size))
        self.text_proj = nn.Linear(config.text_hidden_size, dim)
        self.text_norm = nn.LayerNorm(dim, eps=1e-6)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(SelectorBlock(dim, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.num_layers))
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.row_embed, std=0.02)
        nn.init.normal_(self.col_embed, std=0.02)
        nn.init.normal_(self.null_text, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, AdaLayerNorm):   # zero modulation: blocks start as plain pre-norm blocks
                nn.init.zeros_(module.modulation.weight)
                nn.init.zeros_(module.modulation.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def weight_device(self) -> torch.device:
        """Where the weights are (a method, not a ``device`` attribute: ComfyUI's ModelPatcher sets that)."""
        return self.head.weight.device

    def null_text_states(self, batch: int) -> torch.Tensor:
        """The learned null prompt ``[batch, text_length, text_hidden_size]``."""
        return self.null_text[None].expand(batch, -1, -1)

    def check_inputs(self, tokens: torch.Tensor, text: torch.Tensor) -> None:
        if tokens.ndim != 3:
            raise ValueError(f"selector tokens must be [B, h, w]; got shape {tuple(tokens.shape)}")
        h, w = tokens.shape[1:]
        if h > self.config.max_grid[0] or w > self.config.max_grid[1]:
            raise ValueError(f"token grid {h}x{w} is larger than the selector's position table "
                             f"{self.config.max_grid[0]}x{self.config.max_grid[1]} (max_grid in its config.json)")
        if text.ndim != 3 or text.shape[-1] != self.text_hidden_size:
            raise SelectorMismatchError(
                f"text states are {text.shape[-1] if text.ndim == 3 else tuple(text.shape)} wide but the selector "
                f"reads text of width {self.text_hidden_size}; was the prompt encoded with its generator's text "
                "encoder?")
        if text.shape[0] != tokens.shape[0]:
            raise ValueError(f"text batch {text.shape[0]} does not match token batch {tokens.shape[0]}")

    def forward(self, tokens: torch.Tensor, text: torch.Tensor, t: torch.Tensor | float,
                drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of P(changed). ``drop_text`` ``[B]`` bool replaces those rows' text by the learned null
        prompt (caption dropout in training; the null stays in the graph so it always gets a gradient)."""
        self.check_inputs(tokens, text)
        b, h, w = tokens.shape
        if tokens.min() < 0 or tokens.max() >= self.codebook_size:
            raise ValueError(f"selector tokens must be codebook ids in [0, {self.codebook_size}) (a fully predicted "
                             "map, no mask ids)")
        t = progress_tensor(t, b, tokens.device)
        dtype = self.dtype
        pos = (self.row_embed[:h, None] + self.col_embed[None, :w]).reshape(h * w, -1)
        x = self.token_embed(tokens.reshape(b, h * w)) + pos[None]
        text = text.to(tokens.device, dtype)
        if drop_text is not None:
            if text.shape[1:] != self.null_text.shape:
                raise ValueError(f"caption dropout needs {self.config.text_length} text tokens; got {text.shape[1]}")
            text = torch.where(drop_text.to(tokens.device).reshape(b, 1, 1), self.null_text_states(b).to(dtype), text)
        context = self.text_norm(self.text_proj(text))
        temb = self.time_mlp(timestep_features(t, self.config.time_embed_dim).to(dtype))
        for block in self.blocks:
            x = block(x, context, temb)
        return self.head(self.norm_out(x))[..., 0].reshape(b, h, w)

    @torch.no_grad()
    def prob_changed(self, tokens: torch.Tensor, text: torch.Tensor, t: torch.Tensor | float,
                     guidance: float = 1.0) -> torch.Tensor:
        """P(changed) ``[B, h, w]`` in fp32. ``guidance`` w != 1 also scores with the null prompt and returns
        ``p_null + w·(p_cond − p_null)`` (selector guidance, prototype "tc_guidance"; may leave [0, 1])."""
        if guidance == 1.0:
            return self(tokens, text, t).float().sigmoid()
        b = tokens.shape[0]
        t = progress_tensor(t, b, tokens.device)
        null = self.null_text_states(b).to(text.device)
        if null.shape[1:] == text.shape[1:]:   # one batched pass: rows [cond; null]
            both = self(torch.cat([tokens, tokens]), torch.cat([text.to(null.dtype), null]), t.repeat(2))
            cond, uncond = both.float().sigmoid().chunk(2)
        else:
            cond = self(tokens, text, t).float().sigmoid()
            uncond = self(tokens, null, t).float().sigmoid()
        return uncond + guidance * (cond - uncond)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_selector_matches(selector: TokenSelector | SelectorConfig, generator: nn.Module | None = None, *,
                           codebook_size: int | None = None, text_hidden_size: int | None = None,
                           source: str = "the selector") -> None:
    """Raise :class:`SelectorMismatchError` (naming both numbers) when a selector does not fit a generator."""
    config = selector.config if isinstance(selector, TokenSelector) else selector
    if generator is not None:
        codebook_size = int(generator.codebook_size)
        text_hidden_size = int(generator.text_hidden_size)
    if codebook_size is not None and config.codebook_size != codebook_size:
        raise SelectorMismatchError(
            f"{source} was trained for a {config.codebook_size}-code VQ codebook but the generator predicts "
            f"{codebook_size} codes; train a selector for this generator")
    if text_hidden_size is not None and config.text_hidden_size != text_hidden_size:
        raise SelectorMismatchError(
            f"{source} reads text states of width {config.text_hidden_size} but the generator's text encoder "
            f"gives width {text_hidden_size}; train a selector for this generator")


def save_selector(selector: TokenSelector, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` (created; files replaced atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in selector.state_dict().items()}
    meta = {"config": json.dumps(selector.config.to_json())}
    atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=meta))
    atomic_write(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(selector.config.to_json(), indent=2) + "\n"))
    return folder


def is_selector_folder(path: str | Path) -> bool:
    """A folder with weights and a config that declares a TCTS selector (other models share the layout)."""
    path = Path(path)
    if not ((path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()):
        return False
    try:
        return json.loads((path / CONFIG_NAME).read_text(encoding="utf-8")).get("_class_name") == CLASS_NAME
    except (OSError, ValueError, AttributeError):
        return False


def load_selector(path: str | Path, generator: nn.Module | None = None, *, codebook_size: int | None = None,
                  text_hidden_size: int | None = None, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> TokenSelector:
    """Load a selector folder (``config.json`` + ``model.safetensors``; a path to the ``.safetensors`` file
    inside it works too), strictly, and check it fits ``generator`` (or the given sizes)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"selector {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"selector {path} must be a folder with {CONFIG_NAME} + {WEIGHTS_NAME}")
    if not (path / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in path.glob("*") if p.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin"))
        hint = f" (found {pickles}: pickle files are never loaded)" if pickles else ""
        raise CheckpointError(f"selector folder {path} has no {WEIGHTS_NAME}{hint}")
    config = SelectorConfig.from_json(read_json(path / CONFIG_NAME), str(path / CONFIG_NAME))
    check_selector_matches(config, generator, codebook_size=codebook_size, text_hidden_size=text_hidden_size,
                           source=f"selector {path.name}")
    model = TokenSelector(config)
    state = read_safetensors(path / WEIGHTS_NAME)
    load_strict(model, {k: v.float() for k, v in state.items()}, str(path / WEIGHTS_NAME))
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

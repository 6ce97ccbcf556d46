"""Native aMUSEd transformer (diffusers ``UVit2DModel``).

Module attribute names equal the checkpoint keys (docs/models.md, Checkpoint keys; the released key lists
are in ``tests/fixtures/keys/``), so real aMUSEd files load with ``load_state_dict(strict=True)``. The
forward follows diffusers ``models/unets/uvit_2d.py`` (UVit2DModel.forward, UVitBlock, ConvNextBlock,
ConvMlmLayer) and ``models/attention.py`` (BasicTransformerBlock with ``ada_norm_continuous``,
SkipFFTransformerBlock); every size comes from the checkpoint's ``config.json``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, merge_heads, sinusoidal_embedding, split_heads

UVIT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "use_bias": False,
    "cond_embed_dim": 768,
    "micro_cond_encode_dim": 256,
    "micro_cond_embed_dim": 1280,
    "encoder_hidden_size": 768,
    "vocab_size": 8256,
    "codebook_size": 8192,
    "in_channels": 768,
    "block_out_channels": 768,
    "num_res_blocks": 3,
    "downsample": False,
    "upsample": False,
    "block_num_heads": 12,
    "num_hidden_layers": 22,
    "num_attention_heads": 16,
    "intermediate_size": 2816,
    "layer_norm_eps": 1e-6,
    "ln_elementwise_affine": True,
    "sample_size": 64,
}


class Attention(nn.Module):
    """Multi-head attention with diffusers ``Attention`` key names (``to_q/to_k/to_v/to_out.0``).

    ``context`` is None for self-attention. ``observer`` (set by ``tcts.attention.capture_attention``)
    is called as ``observer(q, k)`` with the per-head queries and keys ``[B, heads, S, head_dim]``
    when present; it computes whatever probabilities it needs from them. The output always comes
    from fused SDPA (diffusers ``AttnProcessor2_0``), so capturing never changes the logits.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 bias: bool = False, out_bias: bool = False) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=out_bias)])
        self.observer = None
        self.context_cache: dict | None = None   # set by UVit2DTransformer.text_cache(); see there

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a cross-attention context, reused within one ``text_cache()`` block."""
        cache = self.context_cache
        if cache is not None and "kv" in cache:
            return cache["kv"]
        kv = split_heads(self.to_k(context), self.heads), split_heads(self.to_v(context), self.heads)
        if cache is not None:
            cache["kv"] = kv
        return kv

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = split_heads(self.to_q(x), self.heads)
        if context is None:
            k, v = split_heads(self.to_k(x), self.heads), split_heads(self.to_v(x), self.heads)
        else:
            k, v = self.context_kv(context)
        out = F.scaled_dot_product_attention(q, k, v)
        if self.observer is not None:
            self.observer(q, k)
        return self.to_out[0](merge_heads(out).to(q.dtype))


class TimestepEmbedding(nn.Module):
    """``linear_1 -> SiLU -> linear_2`` (diffusers ``embeddings.py`` TimestepEmbedding)."""

    def __init__(self, in_dim: int, dim: int, bias: bool) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, bias=bias)
        self.linear_2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ConvEmbed(nn.Module):
    """Token embedding -> RMSNorm -> 1x1 conv (``UVit2DConvEmbed``)."""

    def __init__(self, in_channels: int, out_channels: int, vocab_size: int, eps: float,
                 affine: bool, bias: bool) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, in_channels)
        self.layer_norm = RMSNorm(in_channels, eps, affine)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer_norm(self.embeddings(ids)).permute(0, 3, 1, 2))


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN over NHWC (diffusers ``normalization.py`` GlobalResponseNorm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNextBlock(nn.Module):
    """Depthwise conv + channel MLP with GRN, then a pooled-condition scale/shift (``ConvNextBlock``)."""

    def __init__(self, channels: int, cond_dim: int, eps: float, affine: bool, bias: bool,
                 ffn_factor: int = 4) -> None:
        super().__init__()
        inner = channels * ffn_factor
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=bias)
        self.norm = RMSNorm(channels, eps, affine)
        self.channelwise_linear_1 = nn.Linear(channels, inner, bias=bias)
        self.channelwise_norm = GlobalResponseNorm(inner)
        self.channelwise_linear_2 = nn.Linear(inner, channels, bias=bias)
        self.cond_embeds_mapper = nn.Linear(cond_dim, channels * 2, bias=bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        h = self.channelwise_linear_2(self.channelwise_norm(F.gelu(self.channelwise_linear_1(h))))
        x = h.permute(0, 3, 1, 2) + x
        scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class SkipFFTransformerBlock(nn.Module):
    """Two cross-attentions to the (SiLU + projected) text, no feed-forward (``SkipFFTransformerBlock``)."""

    def __init__(self, channels: int, heads: int, text_dim: int, bias: bool) -> None:
        super().__init__()
        self.kv_mapper = nn.Linear(text_dim, channels, bias=bias) if text_dim != channels else None
        self.norm1 = RMSNorm(channels, 1e-6)
        self.attn1 = Attention(channels, heads, channels // heads, channels, bias, bias)
        self.norm2 = RMSNorm(channels, 1e-6)
        self.attn2 = Attention(channels, heads, channels // heads, channels, bias, bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        cached = all(a.context_cache is not None and "kv" in a.context_cache for a in (self.attn1, self.attn2))
        if self.kv_mapper is not None and not cached:
            text = self.kv_mapper(F.silu(text))
        x = self.attn1(self.norm1(x), text) + x
        return self.attn2(self.norm2(x), text) + x


class Resample(nn.Module):
    """RMSNorm over channels, then a 2x2 stride-2 conv (down) or transposed conv (up).

    diffusers ``downsampling.py`` Downsample2D (pads right/bottom by one before the conv, a no-op for
    even sizes) and ``upsampling.py`` Upsample2D with ``use_conv_transpose``.
    """

    def __init__(self, channels: int, eps: float, affine: bool, bias: bool, up: bool) -> None:
        super().__init__()
        self.up = up
        self.norm = RMSNorm(channels, eps, affine)
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = conv(channels, channels, kernel_size=2, stride=2, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if not self.up:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class UVitBlock(nn.Module):
    """Optional downsample, ``num_res_blocks`` x (ConvNeXt + SkipFF attention), optional upsample."""

    def __init__(self, cfg: Mapping[str, Any], downsample: bool, upsample: bool) -> None:
        super().__init__()
        ch, eps, affine, bias = (cfg["block_out_channels"], cfg["layer_norm_eps"],
                                 cfg["ln_elementwise_affine"], cfg["use_bias"])
        self.downsample = Resample(ch, eps, affine, bias, up=False) if downsample else None
        self.res_blocks = nn.ModuleList(
            ConvNextBlock(ch, cfg["hidden_size"], eps, affine, bias) for _ in range(cfg["num_res_blocks"]))
        self.attention_blocks = nn.ModuleList(
            SkipFFTransformerBlock(ch, cfg["block_num_heads"], cfg["hidden_size"], bias)
            for _ in range(cfg["num_res_blocks"]))
        self.upsample = Resample(ch, eps, affine, bias, up=True) if upsample else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for res_block, attention_block in zip(self.res_blocks, self.attention_blocks):
            x = res_block(x, cond)
            b, c, h, w = x.shape
            x = attention_block(x.view(b, c, h * w).permute(0, 2, 1), text)
            x = x.permute(0, 2, 1).view(b, c, h, w)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class AdaNormContinuous(nn.Module):
    """``norm(x) * (1 + scale) + shift`` with ``scale, shift = linear(SiLU(cond))`` (scale first).

    diffusers ``normalization.py`` AdaLayerNormContinuous; aMUSEd uses RMSNorm for norm1/norm2 and a
    bias-free LayerNorm for norm3.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float, affine: bool, bias: bool,
                 layer_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, dim * 2, bias=bias)
        self.norm = (nn.LayerNorm(dim, eps, elementwise_affine=affine, bias=bias) if layer_norm
                     else RMSNorm(dim, eps, affine))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(cond).to(x.dtype)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class GEGLU(nn.Module):
    """``value * gelu(gate)`` with ``value, gate = proj(x).chunk(2)`` (diffusers ``activations.py``)."""

    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` = GEGLU, ``net.1`` = dropout slot (kept for key names), ``net.2`` = output linear."""

    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, inner, bias), nn.Identity(), nn.Linear(inner, dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TransformerLayer(nn.Module):
    """Self-attention, cross-attention, GEGLU FF, each behind an adaptive norm of the pooled condition
    (diffusers ``BasicTransformerBlock`` with ``norm_type="ada_norm_continuous"``)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, heads, eps, affine, bias = (cfg["hidden_size"], cfg["num_attention_heads"],
                                         cfg["layer_norm_eps"], cfg["ln_elementwise_affine"], cfg["use_bias"])
        self.norm1 = AdaNormContinuous(dim, dim, eps, affine, bias, layer_norm=False)
        self.attn1 = Attention(dim, heads, dim // heads, None, bias, bias)
        self.norm2 = AdaNormContinuous(dim, dim, eps, affine, bias, layer_norm=False)
        self.attn2 = Attention(dim, heads, dim // heads, dim, bias, bias)
        self.norm3 = AdaNormContinuous(dim, dim, eps, affine, bias, layer_norm=True)
        self.ff = FeedForward(dim, cfg["intermediate_size"], bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x, cond)) + x
        x = self.attn2(self.norm2(x, cond), text) + x
        return self.ff(self.norm3(x, cond)) + x


class ConvMlmLayer(nn.Module):
    """1x1 conv -> RMSNorm (NHWC) -> 1x1 conv to codebook logits."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        bias = cfg["use_bias"]
        self.conv1 = nn.Conv2d(cfg["block_out_channels"], cfg["in_channels"], 1, bias=bias)
        self.layer_norm = RMSNorm(cfg["in_channels"], cfg["layer_norm_eps"], cfg["ln_elementwise_affine"])
        self.conv2 = nn.Conv2d(cfg["in_channels"], cfg["codebook_size"], 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(x)


class UVit2DTransformer(nn.Module):
    """The aMUSEd generator: token grid + text -> logits ``[B, codebook_size, H, W]``.

    Shares the generator interface of every family: ``forward(input_ids, encoder_hidden_states,
    pooled_text_emb, micro_conds, timestep=None)``; aMUSEd has no timestep input and ignores it.
    """

    family = "amused"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        cfg = {**UVIT_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
        self.config = cfg
        dim, eps, affine, bias = (cfg["hidden_size"], cfg["layer_norm_eps"],
                                  cfg["ln_elementwise_affine"], cfg["use_bias"])
        self.codebook_size = int(cfg["codebook_size"])
        self.vocab_size = int(cfg["vocab_size"])
        self.token_grid_multiple = 2 if cfg["downsample"] else 1
        self.encoder_proj = nn.Linear(cfg["encoder_hidden_size"], dim, bias=bias)
        self.encoder_proj_layer_norm = RMSNorm(dim, eps, affine)
        self.embed = ConvEmbed(cfg["in_channels"], cfg["block_out_channels"], cfg["vocab_size"], eps,
                               affine, bias)
        self.cond_embed = TimestepEmbedding(cfg["micro_cond_embed_dim"] + cfg["cond_embed_dim"], dim, bias)
        self.down_block = UVitBlock(cfg, downsample=cfg["downsample"], upsample=False)
        self.project_to_hidden_norm = RMSNorm(cfg["block_out_channels"], eps, affine)
        self.project_to_hidden = nn.Linear(cfg["block_out_channels"], dim, bias=bias)
        self.transformer_layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.project_from_hidden_norm = RMSNorm(dim, eps, affine)
        self.project_from_hidden = nn.Linear(dim, cfg["block_out_channels"], bias=bias)
        self.up_block = UVitBlock(cfg, downsample=False, upsample=cfg["upsample"])
        self.mlm_layer = ConvMlmLayer(cfg)

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def text_hidden_size(self) -> int:
        return int(self.config["encoder_hidden_size"])

    @property
    def pooled_size(self) -> int:
        return int(self.config["cond_embed_dim"])

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder_proj.weight.dtype

    @contextlib.contextmanager
    def text_cache(self) -> Iterator[None]:
        """Within this block the text condition must stay the same (as in one sampling run): every
        cross-attention computes its keys/values of the text once and reuses them on later forwards
        (bit-identical results; saves the text projections of 22 + 2·num_res_blocks·2 attentions per step).
        Meissonic has no such cache: its text stream changes with the timestep in every block."""
        cross = self._cross_attentions()
        for m in cross:
            m.context_cache = {}
        try:
            yield
        finally:
            for m in cross:
                m.context_cache = None

    def _cross_attentions(self) -> list[Attention]:
        layers = [layer.attn2 for layer in self.transformer_layers]
        blocks = [a for block in (self.down_block, self.up_block) for b in block.attention_blocks
                  for a in (b.attn1, b.attn2)]
        return layers + blocks

    def embed_condition(self, pooled_text_emb: torch.Tensor, micro_conds: torch.Tensor) -> torch.Tensor:
        """Pooled text + sinusoidal micro-conditions -> the adaptive-norm condition vector."""
        micro = sinusoidal_embedding(micro_conds.flatten(), self.config["micro_cond_encode_dim"])
        micro = micro.reshape(micro_conds.shape[0], -1)
        return self.cond_embed(torch.cat([pooled_text_emb, micro], dim=1).to(self.dtype))

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_text_emb: torch.Tensor, micro_conds: torch.Tensor,
                timestep: torch.Tensor | int | None = None) -> torch.Tensor:
        text = self.encoder_proj_layer_norm(self.encoder_proj(encoder_hidden_states))
        cond = self.embed_condition(pooled_text_emb, micro_conds).to(text.dtype)
        x = self.down_block(self.embed(input_ids), cond, text)
        b, c, h, w = x.shape
        x = self.project_to_hidden(self.project_to_hidden_norm(x.permute(0, 2, 3, 1).reshape(b, h * w, c)))
        for layer in self.transformer_layers:
            x = layer(x, text, cond)
        x = self.project_from_hidden(self.project_from_hidden_norm(x))
        x = self.up_block(x.reshape(b, h, w, c).permute(0, 3, 1, 2), cond, text)
        return self.mlm_layer(x)

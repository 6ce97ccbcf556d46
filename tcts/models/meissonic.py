"""Native Meissonic transformer (``Transformer2DModel`` of ``viiika/Meissonic``).

Reference: ``viiika/Meissonic`` @ ``aeba85e8db9c`` ``src/transformer.py`` (the model; it builds on
diffusers 0.33.1 ``AdaLayerNormZero(Single)``, ``Attention`` + ``FluxAttnProcessor2_0``,
``FeedForward``, ``CombinedTimestepTextProjEmbeddings``, ``Downsample2D``/``Upsample2D`` and
``RMSNorm``) and ``src/pipeline.py`` (``_prepare_latent_image_ids``, the ``txt_ids`` zeros and the
``timestep=tensor([t])`` call). This file is written from the behaviour documented in
``tests/fixtures/README.md`` section 3.3 and checked bit-for-bit against those fixtures.

Module attribute names equal the checkpoint keys, so the released ``transformer/`` safetensors
(867 tensors) load with ``load_state_dict(strict=True)``. Every size comes from ``config.json``.

Parity: logits, intermediates and e2e step-0 logits are bitwise equal to the fixtures (fp32, bf16
and fp16) when ATen runs the AVX2 kernels the fixtures were made with (``ATEN_CPU_CAPABILITY=avx2``)
and the weights are loaded with ``assign=True`` as diffusers 0.33.1 does (MKL's batch-1 GEMV of the
timestep embedder depends on the weights' memory alignment at the 1e-7 level). With AVX-512
kernels fp32 logits differ by < 1e-6, bf16 by a few ulps.

Layout of one forward (token grid ``H x W``, text length ``L``):

1. condition vector ``cond_embed([pooled; sinusoid(micro_conds)])``;
2. token embedding + RMSNorm + 1x1 conv, optional RMSNorm + 2x2 stride-2 conv (``down_block``);
3. flatten to ``(B, N, D)``, ``project_to_hidden``;
4. ``temb = timestep_embedder(sinusoid(t * 1000)) + text_embedder(cond)``;
5. Flux RoPE over ``[text ids (zeros); image ids (0, row, col)]``;
6. ``num_layers`` dual-stream (MMDiT) blocks, ``num_single_layers`` single-stream blocks;
7. drop the text tokens, ``project_from_hidden``, optional RMSNorm + 2x2 transposed conv
   (``up_block``), ``mlm_layer`` -> logits ``(B, codebook_size, H, W)``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, merge_heads, sinusoidal_embedding, split_heads

# Constructor defaults of the reference ``Transformer2DModel.__init__`` (src/transformer.py); like
# diffusers' ``from_pretrained`` they fill keys a config.json leaves out.
MEISSONIC_DEFAULTS: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": False,
    "axes_dims_rope": [16, 56, 56],
    "vocab_size": 8256,
    "codebook_size": 8192,
    "downsample": False,
    "upsample": False,
}

# Released ``MeissonFlow/Meissonic`` transformer/config.json (docs/models.md, Meissonic transformer).
MEISSONIC_RELEASED_CONFIG: dict[str, Any] = {
    "_class_name": "Transformer2DModel",
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "codebook_size": 8192,
    "downsample": True,
    "guidance_embeds": False,
    "in_channels": 64,
    "joint_attention_dim": 1024,
    "num_attention_heads": 8,
    "num_layers": 14,
    "num_single_layers": 28,
    "patch_size": 1,
    "pooled_projection_dim": 1024,
    "upsample": True,
    "vocab_size": 8256,
}

MICRO_COND_CHANNELS = 256  # per micro-cond scalar, hard-coded in the reference forward (not in config)
NUM_MICRO_CONDS = 5  # [width_px, height_px, crop_top, crop_left, aesthetic_score]
ROPE_THETA = 10000.0  # FluxPosEmbed(theta=10000)
NORM_EPS = 1e-6  # RMSNorm / LayerNorm eps, hard-coded in the reference
FP16_MAX = 65504.0


# --------------------------------------------------------------------------------------------------
# position ids, RoPE, resolution rule
# --------------------------------------------------------------------------------------------------

def prepare_image_ids(rows: int, cols: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Image RoPE ids ``(rows * cols, 3)``: ``(0, row, col)`` row-major, for the grid the transformer
    attends over (after the 2x2 downsample when the model has one).

    Equals the reference pipeline's ``_prepare_latent_image_ids`` (src/pipeline.py) wherever the
    reference runs; it builds them in the token tensor's dtype, hence int64 by default.
    """
    ids = torch.zeros(rows, cols, 3, dtype=dtype, device=device)
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :]
    return ids.reshape(rows * cols, 3)


def prepare_text_ids(length: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Text RoPE ids: ``zeros(length, 3)`` in the text-state dtype (src/pipeline.py ``txt_ids``).

    Zero ids give text tokens the identity rotation."""
    return torch.zeros(length, 3, dtype=dtype, device=device)


def rope_cos_sin(ids: torch.Tensor, axes_dims: list[int] | tuple[int, ...],
                 theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux RoPE tables ``(cos, sin)``, each ``(S, sum(axes_dims))`` float32, for ids ``(S, n_axes)``.

    Reference: src/transformer.py ``FluxPosEmbed.forward`` + ``get_1d_rotary_pos_embed(use_real=True,
    repeat_interleave_real=True, freqs_dtype=float64)``. Per axis ``a``: angles
    ``pos_a * theta^(-2j/d_a)`` (j < d_a/2) in float64, ``cos``/``sin`` each repeated twice
    (interleaved pairs), cast to float32; axes concatenated. Computed on the CPU, as the reference
    does (it goes through numpy), then moved to the ids' device.
    """
    if ids.is_meta:  # shape-only runs (meta-device structure checks)
        shape = (ids.shape[0], sum(axes_dims))
        return torch.empty(shape, device="meta"), torch.empty(shape, device="meta")
    pos = ids.detach().float().cpu()
    cos_out, sin_out = [], []
    for axis, dim in enumerate(axes_dims):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        angles = torch.outer(pos[:, axis], freqs)  # float32 x float64 -> float64
        cos_out.append(angles.cos().repeat_interleave(2, dim=1).float())
        sin_out.append(angles.sin().repeat_interleave(2, dim=1).float())
    return torch.cat(cos_out, dim=-1).to(ids.device), torch.cat(sin_out, dim=-1).to(ids.device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``(B, heads, S, head_dim)`` in float32, cast back.

    ``out[2j] = x[2j] cos - x[2j+1] sin``, ``out[2j+1] = x[2j+1] cos + x[2j] sin`` (diffusers
    ``embeddings.py`` ``apply_rotary_emb(use_real=True, use_real_unbind_dim=-1)``; the op order
    ``x*cos + rotated*sin`` is kept for bit parity).
    """
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * cos[None, None] + rotated.float() * sin[None, None]).to(x.dtype)


def check_resolution(height_tokens: int, width_tokens: int, downsample: bool) -> tuple[int, int]:
    """Validate a token grid (``H x W`` VQ tokens = ``16H x 16W`` px); return the transformer grid.

    Rule: ``H`` and ``W`` must be positive, and even when the model has the 2x2 ``downsample``
    (``token_grid_multiple`` 2, i.e. multiples of 32 px); otherwise any size. Image RoPE ids are
    built here from the grid the transformer really attends over, ``(0, r, c)`` for
    ``r < H/m, c < W/m``, so position ids always match the token count ("consistent").

    Why no pixel rule: the reference pipeline (src/pipeline.py) derives the ids from the *pixel
    height*: at ``height == 1024`` from the latent grid halved, otherwise from the full latent grid.
    So it runs a downsample model (the released 1024 px Meissonic) only at ``height == 1024`` px
    (any width that is a multiple of 32), and a no-downsample model (Monetico style) only at
    ``height != 1024``; every other combination crashes in the RoPE broadcast (see
    ``reference_pipeline_runs``). Wherever the reference runs, its ids equal ours, so the logits are
    identical there (checked on all fixtures); other even grids (e.g. 512 px or non-square sizes)
    are supported with consistent ids, though the released weights were trained at 1024 px only.
    An odd grid with ``downsample`` would be padded by the reference's ``F.pad(0,1,0,1)`` and come
    back from the upsample one row/column larger than the input, so it is refused.
    """
    multiple = 2 if downsample else 1
    for name, value in (("height_tokens", height_tokens), ("width_tokens", width_tokens)):
        if int(value) != value or value <= 0 or value % multiple:
            need = "a positive even number (the model has a 2x2 downsample; = multiples of 32 px)" \
                if downsample else "a positive integer"
            raise ValueError(f"Meissonic token grid {name}={value} is invalid: expected {need}; "
                             f"got grid {height_tokens}x{width_tokens} tokens")
    return height_tokens // multiple, width_tokens // multiple


def reference_pipeline_runs(height_tokens: int, width_tokens: int, height_px: int,
                            downsample: bool) -> bool:
    """Whether the reference ``Pipeline`` (src/pipeline.py) runs at this size without crashing.

    It builds ``img_ids`` for ``(H//2) x (W//2)`` at ``height_px == 1024`` and for ``H x W``
    otherwise (``_prepare_latent_image_ids(2H, 2W)`` halves back); the transformer attends over
    ``ceil(H/2) x ceil(W/2)`` tokens with ``downsample`` and ``H x W`` without. A count mismatch
    is the reference's RoPE broadcast ``RuntimeError``. Documentation helper: this module does not
    need it, because it always builds ids from the transformer grid.
    """
    ids = (height_tokens // 2, width_tokens // 2) if height_px == 1024 else (height_tokens, width_tokens)
    grid = (-(-height_tokens // 2), -(-width_tokens // 2)) if downsample else (height_tokens, width_tokens)
    return ids[0] * ids[1] == grid[0] * grid[1]


# --------------------------------------------------------------------------------------------------
# sub-modules (names = checkpoint keys)
# --------------------------------------------------------------------------------------------------

class MLPEmbedding(nn.Module):
    """``linear_1 -> SiLU -> linear_2`` (diffusers ``TimestepEmbedding`` / ``PixArtAlphaTextProjection``).

    ``cond_embed`` uses it without biases, ``time_text_embed.*`` with biases."""

    def __init__(self, in_dim: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, bias=bias)
        self.linear_2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepSinusoid(nn.Module):
    """256-channel cos-first sinusoid, fp32 (diffusers ``Timesteps(256, flip_sin_to_cos=True, 0)``)."""

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(timestep, self.channels)


class TimeTextEmbedding(nn.Module):
    """``temb = timestep_embedder(sinusoid(t).to(cond dtype)) + text_embedder(cond)``.

    Reference: diffusers ``CombinedTimestepTextProjEmbeddings`` called as
    ``time_text_embed(timestep * 1000, cond)``; the timestep has batch 1 and broadcasts over B.
    """

    def __init__(self, dim: int, pooled_dim: int) -> None:
        super().__init__()
        self.time_proj = TimestepSinusoid(256)
        self.timestep_embedder = MLPEmbedding(256, dim)
        self.text_embedder = MLPEmbedding(pooled_dim, dim)

    def forward(self, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t_emb = self.timestep_embedder(self.time_proj(timestep).to(dtype=cond.dtype))
        return t_emb + self.text_embedder(cond)


class FluxPosEmbed(nn.Module):
    """``ids (S, 3) -> (cos, sin)`` RoPE tables; see ``rope_cos_sin``."""

    def __init__(self, axes_dims: list[int]) -> None:
        super().__init__()
        self.axes_dims = list(axes_dims)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(ids, self.axes_dims)


class ConvEmbed(nn.Module):
    """``embeddings -> RMSNorm -> NCHW -> 1x1 conv`` (src/transformer.py ``UVit2DConvEmbed``)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, dim)
        self.layer_norm = RMSNorm(dim, NORM_EPS)
        self.conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer_norm(self.embeddings(input_ids)).permute(0, 3, 1, 2))


class Downsample(nn.Module):
    """RMSNorm over channels, ``F.pad(0,1,0,1)``, 2x2 stride-2 conv, no bias (diffusers
    ``Downsample2D(use_conv=True, padding=0, kernel_size=2, norm_type="rms_norm")``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, NORM_EPS)
        self.conv = nn.Conv2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """RMSNorm over channels, 2x2 stride-2 ``ConvTranspose2d``, no bias (diffusers
    ``Upsample2D(use_conv_transpose=True, kernel_size=2, norm_type="rms_norm")``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, NORM_EPS)
        self.conv = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class ResampleBlock(nn.Module):
    """src/transformer.py ``Simple_UVitBlock``: optional ``downsample`` then optional ``upsample``
    (no parameters at all when both are off, as in the no-downsample checkpoints)."""

    def __init__(self, dim: int, downsample: bool, upsample: bool) -> None:
        super().__init__()
        self.downsample = Downsample(dim) if downsample else None
        self.upsample = Upsample(dim) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class AdaNormZero(nn.Module):
    """``emb -> SiLU -> linear -> chunk(n)``; modulated no-affine LayerNorm(eps 1e-6).

    ``n = 6`` (diffusers ``AdaLayerNormZero``): chunks ``(shift, scale, gate, shift_mlp, scale_mlp,
    gate_mlp)``, returns ``(LN(x)(1+scale)+shift, gate, shift_mlp, scale_mlp, gate_mlp)``.
    ``n = 3`` (``AdaLayerNormZeroSingle``): returns ``(LN(x)(1+scale)+shift, gate)``.
    """

    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shift, scale, gate, *rest = self.linear(F.silu(emb)).chunk(self.chunks, dim=1)
        x = layer_norm(x) * (1 + scale[:, None]) + shift[:, None]
        return (x, gate, *rest)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """``nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)``."""
    return F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS)


class JointAttention(nn.Module):
    """Flux attention (diffusers ``Attention`` + ``FluxAttnProcessor2_0``, qk_norm ``rms_norm``).

    Dual blocks (``joint=True``): image q/k/v from ``to_q/to_k/to_v``, text q/k/v from
    ``add_{q,k,v}_proj``, per-head RMSNorm (``norm_q/norm_k``, ``norm_added_q/norm_added_k``), the
    sequence ``[text; image]``, RoPE on q and k, SDPA (scale ``head_dim^-0.5``, no mask), then
    ``to_out.0`` on the image part and ``to_add_out`` on the text part; returns ``(image, text)``.
    Single blocks (``joint=False``): no text inputs and no output projection (``pre_only``).

    ``observer`` (set by ``tcts.attention.capture_attention``) is called as ``observer(q, k)`` with the
    joint queries and keys ``[B, heads, L + N, head_dim]`` (text first, after qk-norm and RoPE); the
    output always comes from SDPA, so capturing never changes the logits.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, joint: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_q = RMSNorm(head_dim, NORM_EPS)
        self.norm_k = RMSNorm(head_dim, NORM_EPS)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        if joint:
            self.add_q_proj = nn.Linear(dim, inner)
            self.add_k_proj = nn.Linear(dim, inner)
            self.add_v_proj = nn.Linear(dim, inner)
            self.norm_added_q = RMSNorm(head_dim, NORM_EPS)
            self.norm_added_k = RMSNorm(head_dim, NORM_EPS)
            self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
            self.to_add_out = nn.Linear(inner, dim)
        self.observer = None

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        q = self.norm_q(split_heads(self.to_q(hidden_states), self.heads))
        k = self.norm_k(split_heads(self.to_k(hidden_states), self.heads))
        v = split_heads(self.to_v(hidden_states), self.heads)
        if encoder_hidden_states is not None:
            ctx = encoder_hidden_states
            q = torch.cat([self.norm_added_q(split_heads(self.add_q_proj(ctx), self.heads)), q], dim=2)
            k = torch.cat([self.norm_added_k(split_heads(self.add_k_proj(ctx), self.heads)), k], dim=2)
            v = torch.cat([split_heads(self.add_v_proj(ctx), self.heads), v], dim=2)
        if image_rotary_emb is not None:
            q = apply_rope(q, *image_rotary_emb)
            k = apply_rope(k, *image_rotary_emb)
        out = merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)).to(q.dtype)
        if self.observer is not None:
            self.observer(q, k)
        if encoder_hidden_states is None:
            return out
        text_len = encoder_hidden_states.shape[1]
        return self.to_out[0](out[:, text_len:]), self.to_add_out(out[:, :text_len])


class GELUProj(nn.Module):
    """``proj`` then tanh-GELU (diffusers ``GELU(approximate="tanh")``)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """diffusers ``FeedForward(dim, activation_fn="gelu-approximate")``: ``net.0`` D->4D + tanh-GELU,
    ``net.1`` dropout (identity here), ``net.2`` 4D->D."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def clip_fp16(x: torch.Tensor) -> torch.Tensor:
    """fp16-only clip to +-65504 (reference ``TransformerBlock`` / ``SingleTransformerBlock``)."""
    return x.clip(-FP16_MAX, FP16_MAX) if x.dtype == torch.float16 else x


class TransformerBlock(nn.Module):
    """Dual-stream MMDiT block (src/transformer.py ``TransformerBlock``); returns ``(text, image)``.

    Image: ``x += g1 * attn_img``; ``x += g2 * ff(LN(x)(1+sc2)+sh2)``. Text the same with the
    ``c_*`` modulations, ``to_add_out`` and ``ff_context``; the text stream is clipped in fp16.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaNormZero(dim, 6)
        self.norm1_context = AdaNormZero(dim, 6)
        self.attn = JointAttention(dim, heads, head_dim, joint=True)
        self.ff = FeedForward(dim)
        self.ff_context = FeedForward(dim)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, ctx = hidden_states, encoder_hidden_states
        x_n, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, emb=temb)
        c_n, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(ctx, emb=temb)
        attn_img, attn_txt = self.attn(hidden_states=x_n, encoder_hidden_states=c_n,
                                       image_rotary_emb=image_rotary_emb)

        x = x + gate_msa.unsqueeze(1) * attn_img
        x_n = layer_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp.unsqueeze(1) * self.ff(x_n)

        ctx = ctx + c_gate_msa.unsqueeze(1) * attn_txt
        c_n = layer_norm(ctx) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        ctx = clip_fp16(ctx + c_gate_mlp.unsqueeze(1) * self.ff_context(c_n))
        return ctx, x


class SingleTransformerBlock(nn.Module):
    """Single-stream block on ``[text; image]`` (src/transformer.py ``SingleTransformerBlock``):
    ``h += g * proj_out(cat[attn(hn), GELU_tanh(proj_mlp(hn))])``, clipped in fp16."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm = AdaNormZero(dim, 3)
        self.proj_mlp = nn.Linear(dim, dim * mlp_ratio)
        self.proj_out = nn.Linear(dim + dim * mlp_ratio, dim)
        self.attn = JointAttention(dim, heads, head_dim, joint=False)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h_n, gate = self.norm(hidden_states, emb=temb)
        mlp = F.gelu(self.proj_mlp(h_n), approximate="tanh")
        attn = self.attn(hidden_states=h_n, image_rotary_emb=image_rotary_emb)
        out = gate.unsqueeze(1) * self.proj_out(torch.cat([attn, mlp], dim=2))
        return clip_fp16(hidden_states + out)


class ConvMlmLayer(nn.Module):
    """``conv1`` 1x1 -> RMSNorm over channels -> ``conv2`` 1x1 to ``codebook_size`` (no biases)."""

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.layer_norm = RMSNorm(dim, NORM_EPS)
        self.conv2 = nn.Conv2d(dim, codebook_size, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(x)


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------

def sinusoid_micro_conds(micro_conds: torch.Tensor) -> torch.Tensor:
    """``(B, 5)`` -> ``(B, 1280)`` fp32: a 256-channel cos-first sinusoid per scalar, concatenated in
    order (width, height, crop, crop, aesthetic). Reference forward: ``get_timestep_embedding(
    micro_conds.flatten(), 256, flip_sin_to_cos=True, downscale_freq_shift=0).reshape(B, -1)``."""
    return sinusoidal_embedding(micro_conds.flatten(), MICRO_COND_CHANNELS).reshape(micro_conds.shape[0], -1)


def _resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {**MEISSONIC_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    cfg["axes_dims_rope"] = [int(a) for a in cfg["axes_dims_rope"]]
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    if cfg["pooled_projection_dim"] != dim:
        raise ValueError(f"Meissonic config: pooled_projection_dim ({cfg['pooled_projection_dim']}) must equal "
                         f"num_attention_heads * attention_head_dim ({dim}); the reference feeds cond_embed's "
                         f"{dim}-wide output into time_text_embed.text_embedder")
    if sum(cfg["axes_dims_rope"]) != cfg["attention_head_dim"] or any(a % 2 for a in cfg["axes_dims_rope"]):
        raise ValueError(f"Meissonic config: axes_dims_rope {cfg['axes_dims_rope']} must be even numbers summing "
                         f"to attention_head_dim ({cfg['attention_head_dim']})")
    if cfg["guidance_embeds"]:
        raise ValueError("Meissonic config: guidance_embeds=True is not supported (no released checkpoint uses it)")
    if bool(cfg["downsample"]) != bool(cfg["upsample"]):
        raise ValueError(f"Meissonic config: downsample ({cfg['downsample']}) and upsample ({cfg['upsample']}) "
                         "must match, otherwise the logits grid differs from the token grid")
    return cfg


class MeissonicTransformer(nn.Module):
    """Meissonic generator: token grid + CLIP text + micro-conds + step index -> logits.

    ``forward(input_ids (B,H,W) long, encoder_hidden_states (B,L,joint_attention_dim),
    pooled_text_emb (B,pooled_projection_dim), micro_conds (B,5) = [W_px, H_px, 0, 0, aesthetic],
    timestep)`` -> ``(B, codebook_size, H, W)`` logits in the model dtype. The mask token id is
    ``vocab_size - 1`` (8255 for the released model) and gets no logit.

    ``timestep`` is the sampler's step index ``t`` (n-1 ... 0), as the reference pipeline passes
    ``tensor([t])``; the model itself computes ``t.to(model dtype) * 1000`` (so in bf16 3 -> 3008).
    Text states are cast to the model dtype if they differ (the reference requires them to match).
    Image/text RoPE ids are built inside forward (see ``check_resolution``).

    ``vocab_size`` / ``codebook_size`` come from config.json (both present in the released and tiny
    configs); a config without them gets the reference constructor defaults 8256 / 8192, like
    diffusers' ``from_pretrained``. ``meissonic_config_from_state_dict`` reads both from the
    embedding / ``mlm_layer.conv2`` shapes instead.
    """

    family = "meissonic"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        cfg = _resolve_config(config)
        self.config = cfg
        heads, head_dim = int(cfg["num_attention_heads"]), int(cfg["attention_head_dim"])
        dim = heads * head_dim
        self.inner_dim = dim
        self.codebook_size = int(cfg["codebook_size"])
        self.vocab_size = int(cfg["vocab_size"])
        self.downsample = bool(cfg["downsample"])
        self.token_grid_multiple = 2 if self.downsample else 1

        self.pos_embed = FluxPosEmbed(cfg["axes_dims_rope"])
        self.time_text_embed = TimeTextEmbedding(dim, int(cfg["pooled_projection_dim"]))
        self.context_embedder = nn.Linear(int(cfg["joint_attention_dim"]), dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(dim, heads, head_dim) for _ in range(int(cfg["num_layers"])))
        self.single_transformer_blocks = nn.ModuleList(
            SingleTransformerBlock(dim, heads, head_dim) for _ in range(int(cfg["num_single_layers"])))
        self.embed = ConvEmbed(self.vocab_size, dim)
        self.mlm_layer = ConvMlmLayer(dim, self.codebook_size)
        self.cond_embed = MLPEmbedding(NUM_MICRO_CONDS * MICRO_COND_CHANNELS + int(cfg["pooled_projection_dim"]),
                                       dim, bias=False)
        self.encoder_proj_layer_norm = RMSNorm(dim, NORM_EPS)
        self.project_to_hidden_norm = RMSNorm(dim, NORM_EPS)
        self.project_to_hidden = nn.Linear(dim, dim, bias=False)
        self.project_from_hidden_norm = RMSNorm(dim, NORM_EPS)
        self.project_from_hidden = nn.Linear(dim, dim, bias=False)
        self.down_block = ResampleBlock(dim, downsample=self.downsample, upsample=False)
        self.up_block = ResampleBlock(dim, downsample=False, upsample=bool(cfg["upsample"]))

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def text_hidden_size(self) -> int:
        return int(self.config["joint_attention_dim"])

    @property
    def pooled_size(self) -> int:
        return int(self.config["pooled_projection_dim"])

    @property
    def dtype(self) -> torch.dtype:
        return self.context_embedder.weight.dtype

    def check_resolution(self, height_tokens: int, width_tokens: int) -> tuple[int, int]:
        """See module-level ``check_resolution``; returns the transformer (RoPE) grid."""
        return check_resolution(height_tokens, width_tokens, self.downsample)

    def embed_condition(self, pooled_text_emb: torch.Tensor, micro_conds: torch.Tensor) -> torch.Tensor:
        """The condition vector ``cond_embed(cat[pooled, sinusoid256(micro_conds)].to(model dtype))``
        (reference forward, first lines): 256 cos-first channels per micro-cond scalar, appended
        *after* the pooled text embedding; ``cond_embed`` is linear -> SiLU -> linear, no biases."""
        micro = sinusoid_micro_conds(micro_conds)
        return self.cond_embed(torch.cat([pooled_text_emb, micro], dim=1).to(dtype=self.dtype))

    def _validate(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                  pooled_text_emb: torch.Tensor, micro_conds: torch.Tensor) -> None:
        if input_ids.ndim != 3 or input_ids.dtype.is_floating_point:
            raise ValueError(f"input_ids: expected integer token ids (B, H, W), got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}")
        b = input_ids.shape[0]
        checks = (
            ("encoder_hidden_states", encoder_hidden_states, 3, self.text_hidden_size,
             "(B, L, joint_attention_dim)"),
            ("pooled_text_emb", pooled_text_emb, 2, self.pooled_size, "(B, pooled_projection_dim)"),
            ("micro_conds", micro_conds, 2, NUM_MICRO_CONDS, "(B, 5) = [width_px, height_px, 0, 0, aesthetic]"),
        )
        for name, t, ndim, width, layout in checks:
            if t.ndim != ndim or t.shape[-1] != width or t.shape[0] != b:
                raise ValueError(f"{name}: expected shape {layout} with B={b} and last dim {width}, "
                                 f"got {tuple(t.shape)}")

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_text_emb: torch.Tensor, micro_conds: torch.Tensor,
                timestep: torch.Tensor | int) -> torch.Tensor:
        self._validate(input_ids, encoder_hidden_states, pooled_text_emb, micro_conds)
        rows, cols = self.check_resolution(input_ids.shape[1], input_ids.shape[2])
        encoder_hidden_states = encoder_hidden_states.to(self.dtype)

        cond = self.embed_condition(pooled_text_emb, micro_conds).to(encoder_hidden_states.dtype)

        x = self.embed(input_ids)
        ctx = self.encoder_proj_layer_norm(self.context_embedder(encoder_hidden_states))
        x = self.down_block(x)
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        x = self.project_to_hidden(self.project_to_hidden_norm(x))

        # step index t -> t * 1000 computed in the model dtype (reference quirk; bf16 rounds).
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep])
        timestep = timestep.reshape(-1).to(device=x.device, dtype=x.dtype) * 1000
        temb = self.time_text_embed(timestep, cond)

        # ids = cat[text zeros; image (0, r, c)] as float32. The reference concatenates txt_ids in the
        # text dtype with int64 img_ids; both agree exactly for grid sides <= 256 in bf16 (2048 in
        # fp16, any in fp32), i.e. every practical size, and fp32 ids avoid rounding beyond that.
        txt_ids = prepare_text_ids(ctx.shape[1], dtype=torch.float32, device=x.device)
        img_ids = prepare_image_ids(rows, cols, device=x.device)
        rotary = self.pos_embed(torch.cat((txt_ids, img_ids.float()), dim=0))

        for block in self.transformer_blocks:
            ctx, x = block(hidden_states=x, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary)
        hidden = torch.cat([ctx, x], dim=1)
        for block in self.single_transformer_blocks:
            hidden = block(hidden_states=hidden, temb=temb, image_rotary_emb=rotary)
        x = hidden[:, ctx.shape[1]:, ...]

        x = self.project_from_hidden(self.project_from_hidden_norm(x))
        x = self.up_block(x.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return self.mlm_layer(x)


# --------------------------------------------------------------------------------------------------
# config inference for single-file checkpoints
# --------------------------------------------------------------------------------------------------

_REQUIRED_KEYS = (
    "embed.embeddings.weight",
    "context_embedder.weight",
    "cond_embed.linear_1.weight",
    "time_text_embed.text_embedder.linear_1.weight",
    "mlm_layer.conv2.weight",
)


def meissonic_config_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                                     axes_dims_rope: list[int] | None = None) -> dict[str, Any]:
    """Infer a Meissonic ``config.json`` dict from checkpoint keys and shapes.

    ``attention_head_dim`` = length of an ``attn.norm_q`` weight, ``num_attention_heads`` = inner dim
    (``context_embedder`` rows) / head_dim, ``joint_attention_dim`` = ``context_embedder`` columns,
    ``pooled_projection_dim`` = ``time_text_embed.text_embedder.linear_1`` columns, ``vocab_size`` =
    ``embed.embeddings`` rows, ``codebook_size`` = ``mlm_layer.conv2`` rows, layer counts from the
    block indices, ``downsample``/``upsample`` from the presence of ``down_block.downsample.*`` /
    ``up_block.upsample.*``. ``in_channels``/``patch_size``/``guidance_embeds`` are unused by the model
    and get the reference values 64/1/False.

    ``axes_dims_rope`` is not visible in any shape: pass it, or it defaults to the released
    ``[16, 56, 56]`` when head_dim is 128; any other head_dim raises ``ValueError`` asking for the
    checkpoint's config.json. Raises ``ValueError`` naming the missing keys if the dict is not a
    Meissonic transformer.
    """
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    norm_q = next((k for k in ("transformer_blocks.0.attn.norm_q.weight",
                               "single_transformer_blocks.0.attn.norm_q.weight") if k in state_dict), None)
    if norm_q is None:
        missing.append("transformer_blocks.0.attn.norm_q.weight (or single_transformer_blocks.0.attn.norm_q.weight)")
    if missing:
        raise ValueError(f"not a Meissonic transformer state dict: missing keys {missing}")

    head_dim = int(state_dict[norm_q].shape[0])
    inner, text_dim = (int(s) for s in state_dict["context_embedder.weight"].shape)
    if inner % head_dim:
        raise ValueError(f"Meissonic state dict: inner dim {inner} is not a multiple of head_dim {head_dim}")
    if axes_dims_rope is None:
        if head_dim != 128:
            raise ValueError(f"axes_dims_rope cannot be inferred from shapes for attention_head_dim={head_dim} "
                             "(only the released head_dim 128 -> [16, 56, 56] is known); pass axes_dims_rope= "
                             "or load the checkpoint's transformer/config.json")
        axes_dims_rope = [16, 56, 56]

    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
        idx = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
        return max(idx) + 1 if idx else 0

    return {
        "_class_name": "Transformer2DModel",
        "attention_head_dim": head_dim,
        "axes_dims_rope": list(axes_dims_rope),
        "codebook_size": int(state_dict["mlm_layer.conv2.weight"].shape[0]),
        "downsample": "down_block.downsample.conv.weight" in state_dict,
        "guidance_embeds": False,
        "in_channels": 64,
        "joint_attention_dim": text_dim,
        "num_attention_heads": inner // head_dim,
        "num_layers": count("transformer_blocks"),
        "num_single_layers": count("single_transformer_blocks"),
        "patch_size": 1,
        "pooled_projection_dim": int(state_dict["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "upsample": "up_block.upsample.conv.weight" in state_dict,
        "vocab_size": int(state_dict["embed.embeddings.weight"].shape[0]),
    }

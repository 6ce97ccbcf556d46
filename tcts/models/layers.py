"""Building blocks shared by the generator families.

Numerics follow diffusers exactly where bit-parity with the reference checkpoints matters
(diffusers ``models/normalization.py`` RMSNorm, ``models/embeddings.py`` get_timestep_embedding).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with the reference's dtype behaviour.

    The variance is computed in fp32; the normalised value is cast to the weight dtype only when the
    weight is fp16/bf16 (diffusers ``normalization.py`` RMSNorm.forward), which keeps bf16 logits
    bit-identical to the reference.
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight is None:
            return x.to(input_dtype)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return x * self.weight


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Cosine-first sinusoidal embedding of a 1-D tensor of scalars -> ``[len(values), dim]`` (fp32).

    Equals diffusers ``get_timestep_embedding(values, dim, flip_sin_to_cos=True,
    downscale_freq_shift=0)``: frequencies ``exp(-ln(max_period) * j / (dim/2))``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device)
    freqs = torch.exp(exponent / half)
    angles = values[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, S, H*D]`` -> ``[B, H, S, D]``."""
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, S, D]`` -> ``[B, S, H*D]``."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)

"""Custom socket types and the objects that travel through them.

Own types (prefix ``TCTS_``) so that core nodes can never be wired to them by mistake: a token grid
is not a LATENT, and our generator is not a MODEL.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..tcts.settings import ModelSettings
from .api import io

ROOT_CATEGORY = "tcts"
#: every node sits in one of these (one tree in the node library and the search)
LOADERS_CATEGORY = f"{ROOT_CATEGORY}/loaders"
CONDITIONING_CATEGORY = f"{ROOT_CATEGORY}/conditioning"
SAMPLERS_CATEGORY = f"{ROOT_CATEGORY}/samplers"
RULES_CATEGORY = f"{SAMPLERS_CATEGORY}/rules"
TOKENS_CATEGORY = f"{ROOT_CATEGORY}/tokens"
EDITING_CATEGORY = f"{ROOT_CATEGORY}/editing"

ModelType = io.Custom("TCTS_MODEL")
VQType = io.Custom("TCTS_VQ")
TokensType = io.Custom("TCTS_TOKENS")


@dataclass
class GeneratorBundle:
    """TCTS_MODEL: a masked generative transformer under ComfyUI's model manager."""

    patcher: Any                         # comfy.model_patcher.ModelPatcher around the nn.Module
    name: str
    schedule: str = "cosine"             # the checkpoint's default mask schedule
    vq_factor: int = 16
    vq: "VQBundle | None" = None         # the folder's VQ, when loaded together (for previews)
    settings: ModelSettings = field(default_factory=ModelSettings)  # the folder's tcts_settings.json

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    @property
    def family(self) -> str:
        return getattr(self.model, "family", "amused")


@dataclass
class VQBundle:
    """TCTS_VQ: the VQ-GAN under ComfyUI's model manager (always fp32)."""

    patcher: Any
    name: str

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model


@dataclass
class TokenGrid:
    """TCTS_TOKENS: a batch of token grids plus what is needed to use them downstream."""

    tokens: torch.Tensor                 # [B, h, w] long; mask id where masked
    codebook_size: int
    width: int                           # pixel size the grid decodes to
    height: int
    family: str = "amused"
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. prompt text, captured attention

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3:
            raise ValueError(f"token grid must be [B, h, w]; got shape {tuple(self.tokens.shape)}")

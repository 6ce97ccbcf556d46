"""A diffusers-layout model folder: what is in it, checked once, for every way in (``Pipeline``, the CLI and
the ComfyUI loader).

``model_index.json`` beside ``transformer/``, ``vqvae/``, ``text_encoder/``, ``tokenizer/`` and usually
``scheduler/`` (its ``masking_schedule`` and ``mask_token_id``), plus the optional ``tcts_settings.json``
(``tcts/settings.py``). Components load lazily; :meth:`ModelFolder.check` verifies that they fit together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .checkpoints import (CheckpointError, build_on_meta, family_of_config, generator_builders, load_text_encoder,
                          load_transformer, load_vq, read_json)
from .settings import ModelSettings, read_model_settings
from .text import TextEncoder

COMPONENTS = ("transformer", "vqvae", "text_encoder")


@dataclass
class ModelFolder:
    root: Path
    schedule: str = "cosine"                               # the scheduler config's mask schedule
    mask_token_id: int | None = None                       # the scheduler config's, when it names one
    settings: ModelSettings = field(default_factory=ModelSettings)

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        root = Path(path)
        if not root.exists():
            raise CheckpointError(f"model folder {root} does not exist")
        if not (root / "model_index.json").is_file():
            raise CheckpointError(f"{root} is not a diffusers model folder: no model_index.json "
                                  "(expected transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/)")
        config = root / "scheduler" / "scheduler_config.json"
        scheduler = read_json(config) if config.is_file() else {}
        return cls(root, schedule=scheduler.get("masking_schedule", "cosine"),
                   mask_token_id=scheduler.get("mask_token_id"), settings=read_model_settings(root))

    @property
    def name(self) -> str:
        return self.root.name

    def transformer(self, dtype: torch.dtype = torch.float32, variant: str | None = None) -> nn.Module:
        return load_transformer(self.root / "transformer", dtype=dtype, variant=variant)

    def vq(self) -> nn.Module:
        return load_vq(self.root / "vqvae")

    def text_encoder(self, dtype: torch.dtype = torch.float32) -> TextEncoder:
        return load_text_encoder(self.root / "text_encoder", self.root / "tokenizer", dtype=dtype)

    def shells(self) -> dict[str, Any]:
        """Weightless stand-ins built from the component configs alone (meta device; no weights read): the
        transformer and VQ modules, and the text encoder's two widths."""
        from .models.vq import VQModel

        configs = {}
        for sub in COMPONENTS:
            if not (self.root / sub / "config.json").is_file():
                raise CheckpointError(f"{self.root / sub} has no config.json")
            configs[sub] = read_json(self.root / sub / "config.json")
        family = family_of_config(configs["transformer"]) or "amused"
        builders = generator_builders()
        if family not in builders:
            raise CheckpointError(f"{self.root / 'transformer'}: the {family} family is not available in this build")
        text = configs["text_encoder"]
        return {"transformer": build_on_meta(builders[family][0], configs["transformer"]),
                "vq": build_on_meta(VQModel, configs["vqvae"]),
                "text_encoder": SimpleNamespace(hidden_size=int(text["hidden_size"]),
                                                projection_dim=int(text.get("projection_dim", text["hidden_size"])))}

    def check(self, transformer: nn.Module, vq: nn.Module, text: Any | None) -> None:
        """The components agree: the scheduler's mask id is the transformer's, the codebooks and text widths
        match (``text``: a TextEncoder or anything with ``hidden_size`` / ``projection_dim``)."""
        if self.mask_token_id is not None and self.mask_token_id != transformer.mask_token_id:
            raise CheckpointError(f"scheduler mask_token_id {self.mask_token_id} is not the transformer's last "
                                  f"embedding row {transformer.mask_token_id}")
        check_compatible(transformer, vq, text)


def check_compatible(transformer: nn.Module, vq: nn.Module, text: Any | None) -> None:
    """The components of one pipeline must agree on codebook size and text widths."""
    if vq.codebook_size != transformer.codebook_size:
        raise CheckpointError(f"VQ codebook has {vq.codebook_size} codes but the transformer predicts "
                              f"{transformer.codebook_size}")
    if text is not None:
        if text.hidden_size != transformer.text_hidden_size:
            raise CheckpointError(f"text encoder width {text.hidden_size} does not match the transformer's "
                                  f"text input width {transformer.text_hidden_size}")
        if text.projection_dim != transformer.pooled_size:
            raise CheckpointError(f"text encoder projection {text.projection_dim} does not match the "
                                  f"transformer's pooled input {transformer.pooled_size}")


def checkpoint_size(transformer: nn.Module, vq_factor: int) -> int:
    """The side in px of the square size a checkpoint was trained at: aMUSEd's ``sample_size`` tokens;
    Meissonic 1024 px."""
    if getattr(transformer, "family", "amused") == "meissonic":
        return 1024
    return int(transformer.config.get("sample_size", 16)) * vq_factor


def recommended_dimensions(transformer: nn.Module, vq_factor: int, settings: ModelSettings) -> tuple[int, int]:
    """(width, height) when the user gives none: the folder's ``tcts_settings.json``, else the checkpoint's
    square size."""
    side = checkpoint_size(transformer, vq_factor)
    return settings.size or (side, side)

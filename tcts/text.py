"""Prompt -> CLIP text condition, exactly as the aMUSEd/Meissonic reference pipelines compute it.

diffusers ``pipeline_amused.py`` (``__call__``, prompt encoding): tokenize with ``padding="max_length"``
to 77 with the tokenizer's pad token, truncate, no attention mask; ``hidden_states[-2]`` (penultimate
layer, before the final LayerNorm) as the cross-attention states and the projected ``text_embeds`` as
the pooled vector.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

MAX_TOKENS = 77


@dataclass
class TextCondition:
    """Encoded prompts: what the generator needs, plus the ids and text for word lookups."""

    hidden_states: torch.Tensor   # [B, 77, D]
    pooled: torch.Tensor          # [B, P]
    token_ids: torch.Tensor       # [B, 77] long
    texts: list[str]


def clip_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Infer a ``CLIPTextConfig`` dict for a single-file CLIP text encoder with projection.

    Sizes come from the shapes; heads assume 64-dim heads (CLIP-L 12, CLIP-H 16) and the activation is
    ``quick_gelu`` for 768-wide (OpenAI CLIP-L) and ``gelu`` otherwise (LAION CLIP-H/bigG).
    """
    required = ("text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
                "text_projection.weight", "text_model.final_layer_norm.weight")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ValueError(f"not a CLIP text encoder with projection: missing keys {missing}")
    vocab, hidden = state_dict["text_model.embeddings.token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in state_dict if k.startswith("text_model.encoder.layers."))
    return {
        "model_type": "clip_text_model",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "intermediate_size": int(state_dict["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, int(hidden) // 64),
        "max_position_embeddings": int(state_dict["text_model.embeddings.position_embedding.weight"].shape[0]),
        "projection_dim": int(state_dict["text_projection.weight"].shape[0]),
        "hidden_act": "quick_gelu" if hidden == 768 else "gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def build_clip_text_model(config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A ``transformers`` ``CLIPTextModelWithProjection`` loaded strictly from a state dict."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version",
                                                                        "dtype", "torch_dtype", "_name_or_path")})
    with torch.device("meta"):  # no random initialisation of weights that are overwritten anyway
        model = CLIPTextModelWithProjection(cfg)
    model = model.to_empty(device="cpu")
    state = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    model.load_state_dict(state, strict=True)
    with torch.no_grad():  # the one non-persistent buffer, left uninitialised by to_empty()
        positions = model.text_model.embeddings.position_ids
        positions.copy_(torch.arange(positions.shape[-1]).expand_as(positions))
    return model.eval()


def load_tokenizer(folder: str | Path):
    """CLIP BPE tokenizer from a folder with ``vocab.json`` + ``merges.txt`` (the Hub layout)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"tokenizer folder {folder} has no {name}; expected vocab.json + merges.txt")
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


class TextEncoder:
    """CLIP text encoder + tokenizer producing :class:`TextCondition` for the generators."""

    def __init__(self, model: nn.Module, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def projection_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        return self.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                              return_tensors="pt").input_ids

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> TextCondition:
        ids = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        out = self.model(ids.to(device), output_hidden_states=True, return_dict=True)
        return TextCondition(hidden_states=out.hidden_states[-2], pooled=out.text_embeds, token_ids=ids,
                             texts=list(prompts))

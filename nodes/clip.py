"""ComfyUI ``CLIP`` objects that reproduce aMUSEd / Meissonic text conditioning exactly.

aMUSEd and Meissonic condition on a CLIP text encoder *with projection* (``CLIPTextModelWithProjection``)
in a way no stock ComfyUI text-encoder type does (see ``tcts/text.py``, our reference path):

* cross-attention states = ``hidden_states[-2]``: the penultimate layer, **without** the final LayerNorm;
* pooled vector = the **projected** ``text_embeds`` (EOS-pooled, final-LN, ``text_projection``);
* 77 tokens, padded with the tokenizer's pad token (``<|endoftext|>`` for aMUSEd), no attention mask.

**A plain core ``CLIPLoader`` is NOT equivalent.**  ``CLIPLoader`` -> ``comfy.sd.load_clip`` turns a
CLIP-L file into ``comfy.sd1_clip.SD1ClipModel`` (its ``SD1CheckpointClipModel``): the last layer (with
``CLIPSetLastLayer(-2)``: the penultimate one but *with* the final LayerNorm, see
``comfy.clip_model.CLIPTextModel_.forward``) and the *unprojected* pooler (``return_projected_pooled=False``).
A CLIP-H file becomes ``comfy.text_encoders.sd2_clip.SD2ClipModel``: penultimate *with* the final LayerNorm
and pad id 0.  Measured on ComfyUI 0.3.75 against the reference encoding of a CLIP-L: 0.64 off on the states
and 4.8 on the pooled vector.  That is why the pack ships its own loader built on this module.

**How the CLIP is built.**  ``comfy.sd.CLIP(target=ClipTarget(TctsTokenizer, TctsClipModel), ...)``
(``comfy.sd.CLIP.__init__``; ``comfy.supported_models_base.ClipTarget``), then a strict weight load.  The
text model is ComfyUI's own ``comfy.clip_model.CLIPTextModel`` driven by
``comfy.sd1_clip.SDClipModel(layer="hidden", layer_idx=-2, layer_norm_hidden_state=False,
return_projected_pooled=True)`` inside a ``comfy.sd1_clip.SD1ClipModel``.  The per-model values travel
through ComfyUI's own channels: ``ClipTarget.params`` become constructor kwargs of the clip class, and
``tokenizer_data`` reaches the tokenizer constructor (both in ``comfy.sd.CLIP.__init__``).  We chose this
over ``comfy.sd.load_clip(..., model_options={"clip_l_class": ...})`` because ``load_clip`` (a) always uses
ComfyUI's bundled vocab (``tokenizer_data`` is built inside ``load_text_encoder_state_dicts``, so a
folder's own tokenizer cannot be passed), (b) routes by layer count (``comfy.sd.detect_te_model``), so
CLIP-H files get the SD2 tokenizer that pads with 0 and small models land on the CLIP-L route, and (c) only
logs missing keys (``load_text_encoder_state_dicts``).  ``CLIP(target=...)`` with ``params`` /
``tokenizer_data`` / ``model_options`` is the same entry point ``load_clip`` itself uses, stable across
0.3.x; the result is an ordinary ``comfy.sd.CLIP`` (ModelPatcher, offloading, LoRA keys
``clip_l.transformer.*`` / ``clip_h.transformer.*``, hooks, prompt weighting).

**ComfyUI-specific prompt handling** (``comfy.sd1_clip.SDTokenizer.tokenize_with_weights``):

* ``(word:1.2)`` / ``(word)`` are prompt *weights*: the brackets are removed, each weighted span is
  tokenized on its own, and tokens with weight != 1 are interpolated against an encoded empty prompt.
  That is a ComfyUI extension, not aMUSEd's conditioning: only weight-free prompts give aMUSEd's exact
  ids.  Write ``\\(`` ``\\)`` for literal brackets (``a \\(red\\) cat`` == HF ``a (red) cat``).
  ``embedding:<name>`` inserts a textual-inversion embedding (ComfyUI's ``embeddings`` folders).
* Prompts longer than 77 tokens are **not truncated**: they are split into 77-token chunks (each
  ``<start> ... <end>`` + padding), every chunk is encoded, the states are concatenated along the token
  axis (``cond`` is ``[1, 77*k, D]``) and the pooled vector is the first chunk's
  (``comfy.sd1_clip.ClipTokenWeightEncoder.encode_token_weights``).  A weight-free prompt is one span, cut
  mid-span when it has >= 8 tokens (``is_large`` in ``tokenize_with_weights``), so the first
  chunk is exactly HF's ``truncation=True`` result (start + first 75 tokens + end).  (With weights, a
  short span that does not fit moves whole to the next chunk, so the first chunk can end earlier.)
  aMUSEd/Meissonic cross-attend a fixed 77 positions: our sampler nodes must use ``cond[:, :77]`` (the
  first chunk, :func:`first_chunk`) and may warn when ``cond.shape[1] > 77``.

**dtype.** Default: ``comfy.model_management.text_encoder_dtype`` (fp16 even on CPU; ComfyUI computes
in fp32 with manual-cast weights).  Pass ``dtype=torch.float32`` for exact parity tests.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

import comfy.clip_model
import comfy.sd
import comfy.sd1_clip
import comfy.utils
from comfy.supported_models_base import ClipTarget

from ..tcts.checkpoints import (FAMILY_NAMES, CheckpointError, with_article, detect_family, load_strict, read_json,
                              read_safetensors, read_sharded_or_single)
from ..tcts.text import MAX_TOKENS, clip_config_from_state_dict

log = logging.getLogger("tcts.nodes.clip")

#: ComfyUI's bundled OpenAI CLIP BPE tokenizer (vocab.json + merges.txt), shared by CLIP-L and CLIP-H.
BUNDLED_TOKENIZER = Path(comfy.sd1_clip.__file__).resolve().parent / "sd1_tokenizer"

#: Known full-size text towers: kind -> (hidden, layers, activation, comfy clip name).
KNOWN_CLIP_KINDS: dict[str, tuple[int, int, str, str]] = {
    "CLIP-L": (768, 12, "quick_gelu", "l"),   # OpenAI ViT-L/14 text tower (aMUSEd)
    "CLIP-H": (1024, 24, "gelu", "h"),        # LAION ViT-H/14 text tower (Meissonic)
    "CLIP-G": (1280, 32, "gelu", "g"),        # LAION ViT-bigG/14 text tower (SDXL)
}

#: Key of our entry in ComfyUI's ``tokenizer_data`` dict.
TOKENIZER_DATA_KEY = "tcts_clip_tokenizer"

_TOKEN_EMB = "text_model.embeddings.token_embedding.weight"
_PROJ = "text_projection.weight"
_REQUIRED = (_TOKEN_EMB, "text_model.embeddings.position_embedding.weight",
             "text_model.encoder.layers.0.mlp.fc1.weight", "text_model.final_layer_norm.weight")
#: HF buffers that some saves contain and that carry no weights.
_IGNORED_KEYS = ("text_model.embeddings.position_ids",)


# ---------------------------------------------------------------------------------------------
# ComfyUI model / tokenizer classes
# ---------------------------------------------------------------------------------------------


class TctsClipTextModel(comfy.clip_model.CLIPTextModel):
    """``comfy.clip_model.CLIPTextModel`` with the config's vocab and projection.

    ComfyUI 0.3.75 hard-codes a 49408-token embedding (the ``comfy.clip_model.CLIPEmbeddings`` default, which
    ``CLIPTextModel_`` builds without reading ``vocab_size`` from the config) and a square
    ``text_projection`` (hidden -> hidden).
    Real CLIP-L/H match both; small models (our tiny test and demo encoders) do not, so those two
    modules are rebuilt from ``vocab_size`` / ``projection_dim``.  Forward is ComfyUI's, unchanged.
    """

    def __init__(self, config_dict: Mapping[str, Any], dtype: torch.dtype | None, device: Any, operations: Any):
        super().__init__(config_dict, dtype, device, operations)
        hidden = int(config_dict["hidden_size"])
        vocab = int(config_dict.get("vocab_size", 49408))
        proj = int(config_dict.get("projection_dim", hidden))
        emb = self.text_model.embeddings
        if emb.token_embedding.weight.shape[0] != vocab:
            self.text_model.embeddings = comfy.clip_model.CLIPEmbeddings(
                hidden, vocab_size=vocab, num_positions=int(config_dict["max_position_embeddings"]),
                dtype=dtype, device=device, operations=operations)
        if proj != hidden:
            self.text_projection = operations.Linear(hidden, proj, bias=False, dtype=dtype, device=device)


class TctsSDClipModel(comfy.sd1_clip.SDClipModel):
    """``comfy.sd1_clip.SDClipModel`` fixed to aMUSEd/Meissonic semantics.

    ``layer="hidden", layer_idx=-2, layer_norm_hidden_state=False`` -> ``hidden_states[-2]`` before the
    final LayerNorm; ``return_projected_pooled=True`` -> ``text_embeds``.  ``special_tokens`` are the
    tokenizer's (start / end / pad ids); the end id decides the EOS pooling position (the first end token:
    ``SDClipModel.process_tokens`` and ``comfy.clip_model.CLIPTextModel_.forward``), as HF does for CLIP
    vocabularies.
    """

    def __init__(self, device: Any = "cpu", dtype: torch.dtype | None = None, model_options: Mapping = {},
                 text_config: Mapping[str, Any] | None = None, special_tokens: Mapping[str, int] | None = None):
        if text_config is None or special_tokens is None:
            raise ValueError("TctsSDClipModel needs text_config and special_tokens (built by nodes/clip.py)")
        super().__init__(device=device, max_length=int(text_config["max_position_embeddings"]), layer="hidden",
                         layer_idx=-2, textmodel_json_config=dict(text_config), dtype=dtype,
                         model_class=TctsClipTextModel, special_tokens=dict(special_tokens),
                         layer_norm_hidden_state=False, return_projected_pooled=True,
                         model_options=dict(model_options))


class TctsClipModel(comfy.sd1_clip.SD1ClipModel):
    """The ``cond_stage_model`` of our CLIP: ComfyUI's single-encoder wrapper (``comfy.sd1_clip.SD1ClipModel``).

    Its attribute is ``clip_l`` / ``clip_h`` / ``clip_g`` (so LoRA key mapping and textual-inversion keys
    follow ComfyUI's conventions) and tokens come under the matching key from :class:`TctsTokenizer`.
    """

    def __init__(self, device: Any = "cpu", dtype: torch.dtype | None = None, model_options: Mapping = {},
                 clip_name: str = "l", text_config: Mapping[str, Any] | None = None,
                 special_tokens: Mapping[str, int] | None = None):
        super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name=clip_name,
                         clip_model=TctsSDClipModel, text_config=text_config, special_tokens=special_tokens)


class TctsSDTokenizer(comfy.sd1_clip.SDTokenizer):
    """ComfyUI's ``comfy.sd1_clip.SDTokenizer`` on a given CLIP BPE folder.

    Reads its settings from ``tokenizer_data[TOKENIZER_DATA_KEY]`` (path, pad id, clip name, width):
    padded to 77 with the tokenizer's own pad token (``<|endoftext|>`` for aMUSEd), start/end ids from
    the tokenizer itself.
    """

    def __init__(self, embedding_directory: Any = None, tokenizer_data: Mapping[str, Any] = {}):
        spec = tokenizer_data[TOKENIZER_DATA_KEY]
        super().__init__(tokenizer_path=spec["path"], max_length=spec["max_length"], pad_with_end=True,
                         embedding_directory=embedding_directory, embedding_size=spec["embedding_size"],
                         embedding_key=f"clip_{spec['clip_name']}", pad_token=spec["pad"],
                         tokenizer_data=tokenizer_data)


class TctsTokenizer(comfy.sd1_clip.SD1Tokenizer):
    """``comfy.sd1_clip.SD1Tokenizer`` around :class:`TctsSDTokenizer`; keys tokens by clip name."""

    def __init__(self, embedding_directory: Any = None, tokenizer_data: Mapping[str, Any] = {}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         clip_name=tokenizer_data[TOKENIZER_DATA_KEY]["clip_name"], tokenizer=TctsSDTokenizer)


# ---------------------------------------------------------------------------------------------
# state dicts and configs
# ---------------------------------------------------------------------------------------------


def normalize_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF key layout for a CLIP text state dict, as ComfyUI normalizes it (``comfy.sd.load_text_encoder_state_dicts``).

    OpenCLIP layout (``transformer.resblocks.*``) -> HF via ``comfy.utils.clip_text_transformers_convert``;
    a bare ``text_projection`` (CLIPSave / OpenCLIP, ``[hidden, proj]``) -> ``text_projection.weight``
    (transposed); the HF ``position_ids`` buffer is dropped.
    """
    sd = dict(state_dict)
    if "transformer.resblocks.0.ln_1.weight" in sd:
        sd = comfy.utils.clip_text_transformers_convert(sd, "", "")
    elif "text_projection" in sd and _PROJ not in sd:
        sd[_PROJ] = sd.pop("text_projection").transpose(0, 1).contiguous()
    for k in _IGNORED_KEYS:
        sd.pop(k, None)
    return sd


def _what_is(state_dict: Mapping[str, torch.Tensor]) -> str:
    try:
        return with_article(FAMILY_NAMES[detect_family(state_dict)])
    except CheckpointError:
        sample = ", ".join(sorted(state_dict)[:4])
        return f"an unrecognised model (keys like {sample})"


def check_clip_text_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` (normalized) is a CLIP text encoder with projection."""
    missing = [k for k in _REQUIRED if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source} is not a CLIP text encoder: it holds {_what_is(state_dict)}; "
                              f"missing keys {missing}")
    if _PROJ not in state_dict:
        raise CheckpointError(
            f"{source} is a CLIP text model without 'text_projection.weight' (a plain CLIPTextModel, like the "
            "CLIP-L inside SD1.x checkpoints). aMUSEd/Meissonic use the projected pooled vector (text_embeds "
            "of CLIPTextModelWithProjection), which cannot be computed without it: use the model's own "
            "text_encoder (with projection)")


def clip_kind(config: Mapping[str, Any]) -> str:
    """``"CLIP-L"``, ``"CLIP-H"``, ``"CLIP-G"`` for the full-size towers, else ``"custom"``."""
    for kind, (hidden, layers, act, _) in KNOWN_CLIP_KINDS.items():
        if (config["hidden_size"], config["num_hidden_layers"], config["hidden_act"]) == (hidden, layers, act):
            return kind
    return "custom"


def comfy_clip_name(config: Mapping[str, Any]) -> str:
    """ComfyUI's name for the encoder slot: ``l`` (CLIP-L-like, quick_gelu), ``h`` (gelu) or ``g`` (CLIP-G)."""
    kind = clip_kind(config)
    if kind != "custom":
        return KNOWN_CLIP_KINDS[kind][3]
    return "l" if config.get("hidden_act") == "quick_gelu" else "h"


def detect_clip_text(state_dict: Mapping[str, torch.Tensor], source: str = "this state dict") -> tuple[str, dict]:
    """(kind, HF ``CLIPTextConfig`` dict) of a CLIP-with-projection state dict, from keys and shapes only.

    Works on meta tensors.  Heads assume 64-dim heads and the activation ``quick_gelu`` at width 768
    (OpenAI CLIP-L), ``gelu`` otherwise (LAION CLIP-H/G), as in ``tcts.text.clip_config_from_state_dict``.
    """
    sd = normalize_clip_state_dict(state_dict)
    check_clip_text_state_dict(sd, source)
    config = clip_config_from_state_dict(sd)
    return clip_kind(config), config


def _comfy_text_config(config: Mapping[str, Any], source: str) -> dict:
    """The subset of an HF CLIP text config that ComfyUI's ``comfy.clip_model.CLIPTextModel_`` reads."""
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "vocab_size", "projection_dim")
    missing = [k for k in keys if k not in config]
    if missing:
        raise CheckpointError(f"{source}: CLIP text config lacks {missing}")
    out = {k: config[k] for k in keys}
    out["hidden_act"] = str(out["hidden_act"])
    if out["hidden_act"] not in comfy.clip_model.ACTIVATIONS:
        raise CheckpointError(f"{source}: activation {out['hidden_act']!r} is not supported by ComfyUI's CLIP "
                              f"(supported: {sorted(comfy.clip_model.ACTIVATIONS)})")
    if int(out["max_position_embeddings"]) != MAX_TOKENS:
        raise CheckpointError(f"{source}: {out['max_position_embeddings']} positions; aMUSEd/Meissonic text "
                              f"encoders have {MAX_TOKENS} (ComfyUI pads prompts to the position count)")
    if int(out["num_hidden_layers"]) < 3:
        raise CheckpointError(f"{source}: {out['num_hidden_layers']} layers; the penultimate-layer condition "
                              "needs at least 3 in ComfyUI's SDClipModel")
    eps = float(config.get("layer_norm_eps", 1e-5))
    if abs(eps - 1e-5) > 1e-12:
        raise CheckpointError(f"{source}: layer_norm_eps {eps}; ComfyUI's CLIP LayerNorms use 1e-5")
    out["eos_token_id"] = config.get("eos_token_id", 2)
    return out


@lru_cache(maxsize=8)
def _special_tokens(tokenizer_dir: str) -> tuple[dict[str, int], int]:
    """(start/end/pad ids, vocabulary size) of a CLIP BPE tokenizer folder, read with ``transformers``."""
    from transformers import CLIPTokenizer

    folder = Path(tokenizer_dir)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"tokenizer folder {folder} has no {name}; expected vocab.json + merges.txt")
    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    empty = tok("")["input_ids"]
    if len(empty) != 2:
        raise CheckpointError(f"{folder}: the tokenizer does not add start and end tokens (got {empty} for '')")
    start, end = int(empty[0]), int(empty[1])
    pad = tok.pad_token_id if tok.pad_token_id is not None else end
    return {"start": start, "end": end, "pad": int(pad)}, len(tok)


def _check_pooling(config: Mapping[str, Any], special: Mapping[str, int], vocab_in_tokenizer: int, source: str) -> None:
    """Warn where HF would pool elsewhere than ComfyUI (first end token).

    With the legacy ``eos_token_id == 2`` HF pools at ``input_ids.argmax(-1)``, the first end token only
    when the end id is the largest id (true for the CLIP vocab and our tiny test vocab).
    """
    if int(config.get("eos_token_id", 2)) == 2 and special["end"] != vocab_in_tokenizer - 1:
        log.warning("%s: the end token %d is not the largest id (%d); transformers pools at argmax(ids) with "
                    "eos_token_id=2, so the pooled vector may differ from ComfyUI's first-end-token pooling",
                    source, special["end"], vocab_in_tokenizer - 1)
    elif int(config.get("eos_token_id", 2)) not in (2, special["end"]):
        log.warning("%s: config eos_token_id %s differs from the tokenizer's end id %d; transformers pools at "
                    "the config's id, ComfyUI at the tokenizer's", source, config.get("eos_token_id"), special["end"])


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------


def _build_clip(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], tokenizer_dir: Path,
                source: str, dtype: torch.dtype | None) -> comfy.sd.CLIP:
    text_config = _comfy_text_config(config, source)
    special, tok_vocab = _special_tokens(str(Path(tokenizer_dir).resolve()))
    special = dict(special)  # the cached dict stays untouched
    if tok_vocab > int(text_config["vocab_size"]):
        raise CheckpointError(
            f"{source} has a {text_config['vocab_size']}-token vocabulary but the tokenizer in {tokenizer_dir} "
            f"has {tok_vocab} tokens: they do not belong together (pass the model's own tokenizer folder)")
    _check_pooling(config, special, tok_vocab, source)
    name = comfy_clip_name(text_config)

    target = ClipTarget(TctsTokenizer, TctsClipModel)
    target.params = {"clip_name": name, "text_config": text_config, "special_tokens": special}
    tokenizer_data = {TOKENIZER_DATA_KEY: {"path": str(tokenizer_dir), "pad": special["pad"], "clip_name": name,
                                           "embedding_size": int(text_config["hidden_size"]),
                                           "max_length": int(text_config["max_position_embeddings"])}}
    model_options: dict[str, Any] = {}
    if dtype is not None:
        model_options["dtype"] = dtype   # else comfy.sd.CLIP uses model_management.text_encoder_dtype
    clip = comfy.sd.CLIP(target=target, embedding_directory=_embedding_directory(), tokenizer_data=tokenizer_data,
                         parameters=comfy.utils.calculate_parameters(state_dict), model_options=model_options)
    transformer = getattr(clip.cond_stage_model, f"clip_{name}").transformer
    load_strict(transformer, state_dict, source)
    log.info("tcts CLIP (%s, %s) from %s: penultimate layer without final LN, projected pooled",
             clip_kind(text_config), name, source)
    return clip


def _embedding_directory() -> list[str] | None:
    """ComfyUI's textual-inversion folders (``folder_paths`` "embeddings"), as ``CLIPLoader`` passes them."""
    try:
        import folder_paths
        return folder_paths.get_folder_paths("embeddings")
    except Exception:  # noqa: BLE001 - outside a full ComfyUI (e.g. comfy imported as a library)
        return None


def clip_from_folder(text_encoder_dir: Path, tokenizer_dir: Path, dtype: torch.dtype | None = None) -> comfy.sd.CLIP:
    """A ComfyUI ``CLIP`` for a diffusers-layout text encoder + its own tokenizer.

    ``text_encoder_dir``: ``config.json`` + ``model.safetensors`` (or ``model.fp16.safetensors``, or a
    sharded index); safetensors only.  ``tokenizer_dir``: ``vocab.json`` + ``merges.txt`` (the folder's
    own vocab: real aMUSEd uses the standard CLIP vocab, tiny/demo models their own); start/end/pad ids
    come from it.  The model config (sizes, activation, projection, vocab, positions) is the folder's
    ``config.json``.  Weights load strictly (:class:`tcts.checkpoints.CheckpointError` lists missing,
    unexpected and mis-shaped keys).  ``dtype`` None -> ``model_management.text_encoder_dtype``.

    Stock ``CLIPTextEncode`` on the result gives ``[[cond [1, 77, D], {"pooled_output": [1, P]}]]`` equal
    to ``tcts.text.TextEncoder.encode([text])`` (``hidden_states``, ``pooled``).
    """
    text_encoder_dir, tokenizer_dir = Path(text_encoder_dir), Path(tokenizer_dir)
    if not text_encoder_dir.is_dir():
        raise CheckpointError(f"text encoder folder {text_encoder_dir} does not exist")
    state, source = read_sharded_or_single(text_encoder_dir, "model", None)
    config = read_json(text_encoder_dir / "config.json")
    sd = normalize_clip_state_dict(state)
    check_clip_text_state_dict(sd, str(source))
    return _build_clip(sd, config, tokenizer_dir, str(source), dtype)


def clip_from_file(path: Path, dtype: torch.dtype | None = None, *, tokenizer_dir: Path | None = None,
                   config: Mapping[str, Any] | Path | None = None) -> comfy.sd.CLIP:
    """A ComfyUI ``CLIP`` for one CLIP-text-with-projection safetensors (``models/text_encoders``, ``models/clip``).

    The kind (CLIP-L: 768 wide, 12 layers, quick_gelu; CLIP-H: 1024, 24, gelu; CLIP-G) and the config are
    detected from keys and shapes (:func:`detect_clip_text`); HF or OpenCLIP key layouts.  Tokenizer:
    ComfyUI's bundled OpenAI CLIP BPE (``comfy/sd1_tokenizer``; aMUSEd's CLIP-L and Meissonic's CLIP-H
    share this vocab), padded with ``<|endoftext|>`` like aMUSEd.

    ``tokenizer_dir``: use this folder's tokenizer instead (its own vocab and pad id), e.g. for models
    with a non-standard vocab such as our tiny test encoders, or to use Meissonic's tokenizer folder with
    its own pad token.  ``config``: an HF ``CLIPTextConfig`` dict or ``config.json`` path for what shapes
    cannot tell (head count, activation) in non-standard models; without it a ``config.json`` beside the
    file is used when its ``model_type`` is ``clip_text_model`` (the diffusers layout).

    Errors (:class:`tcts.checkpoints.CheckpointError`): not a CLIP text model (names what the file holds,
    e.g. a VQ-GAN or an aMUSEd transformer), no ``text_projection``, a pickle file, a tokenizer whose
    vocabulary does not fit the embedding, keys that do not fit.
    """
    path = Path(path)
    state = read_safetensors(path)
    sd = normalize_clip_state_dict(state)
    check_clip_text_state_dict(sd, str(path))
    if config is None:
        beside = path.parent / "config.json"
        if beside.is_file():
            found = read_json(beside)
            if found.get("model_type") == "clip_text_model":
                config = found
    elif not isinstance(config, Mapping):
        config = read_json(Path(config))
    if config is None:
        kind, config = detect_clip_text(sd, str(path))
        if kind == "custom":
            log.warning("%s: not a standard CLIP-L/H/G text tower (%d wide, %d layers); heads (64-dim) and "
                        "activation are guessed: pass config= for exact results", path, config["hidden_size"],
                        config["num_hidden_layers"])
    return _build_clip(sd, config, Path(tokenizer_dir) if tokenizer_dir is not None else BUNDLED_TOKENIZER,
                       str(path), dtype)


def first_chunk(cond: torch.Tensor, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """The first 77-token chunk of a ComfyUI conditioning tensor ``[B, 77*k, D]`` (see module docstring)."""
    if cond.shape[1] % max_tokens != 0:
        raise ValueError(f"conditioning has {cond.shape[1]} tokens, not a multiple of {max_tokens}: "
                         "not from an aMUSEd/Meissonic CLIP")
    return cond[:, :max_tokens]


__all__ = ["clip_from_folder", "clip_from_file", "detect_clip_text", "normalize_clip_state_dict",
           "check_clip_text_state_dict", "clip_kind", "first_chunk", "KNOWN_CLIP_KINDS", "BUNDLED_TOKENIZER",
           "TctsClipTextModel", "TctsSDClipModel", "TctsClipModel", "TctsSDTokenizer", "TctsTokenizer"]

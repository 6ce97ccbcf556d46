"""Find, identify and strictly load checkpoint files (safetensors only, never pickle).

Two forms are supported: the diffusers folder (``model_index.json`` + ``transformer/``, ``vqvae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, with optional ``*.fp16.safetensors`` variants and
sharded ``*.safetensors.index.json``), and split single files as ComfyUI users keep them, whose family
and config are detected from the keys and shapes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}

# Key that identifies each family in a state dict (first match wins).
FAMILY_MARKERS: dict[str, tuple[str, ...]] = {
    "amused": ("encoder_proj.weight", "transformer_layers.0.attn1.to_q.weight", "mlm_layer.conv2.weight"),
    "meissonic": ("transformer_blocks.0.attn.to_q.weight", "single_transformer_blocks.0.attn.to_q.weight"),
    "vq": ("quantize.embedding.weight", "encoder.conv_in.weight", "decoder.conv_out.weight"),
    "clip_text": ("text_model.embeddings.token_embedding.weight", "text_projection.weight"),
}
FAMILY_NAMES = {"amused": "aMUSEd transformer (UVit2DModel)", "meissonic": "Meissonic transformer",
                "vq": "VQ-GAN (VQModel)", "clip_text": "CLIP text encoder with projection"}


class CheckpointError(ValueError):
    """A checkpoint file or folder is missing, unreadable, unsafe or of the wrong kind."""


def safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}


def sidecar_config(path: Path, classes: tuple[str, ...] = ()) -> dict | None:
    """Config for a single file: a ``config`` JSON entry in its safetensors metadata, or a
    ``<name>.json`` / ``config.json`` beside it (how a diffusers component file travels with its config).
    A ``config.json`` beside it counts only when its ``_class_name`` is one of ``classes``."""
    meta = safetensors_metadata(path).get("config")
    if meta:
        try:
            return json.loads(meta)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: its metadata 'config' entry is not valid JSON: {exc}") from exc
    own = path.with_suffix(".json")
    if own.is_file():
        return read_json(own)
    shared = path.parent / "config.json"
    if shared.is_file():
        config = read_json(shared)
        if config.get("_class_name") in classes or config.get("model_type") in classes:
            return config
    return None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every tensor of one safetensors file, with clear errors for missing, pickle or broken files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a .safetensors file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is a pickle-based checkpoint ({path.suffix}); tcts loads only .safetensors files "
            "because unpickling can run arbitrary code. Convert it to safetensors with a trusted tool first.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); expected a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated, corrupt or another format): {exc}") from exc


def read_sharded_or_single(folder: Path, stem: str, variant: str | None) -> tuple[dict[str, torch.Tensor], Path]:
    """Load ``<stem>[.variant].safetensors`` or its sharded index from a diffusers component folder."""
    names = [f"{stem}.{variant}.safetensors", f"{stem}.safetensors"] if variant else \
        [f"{stem}.safetensors", f"{stem}.fp16.safetensors"]
    for name in names:
        if (folder / name).is_file():
            return read_safetensors(folder / name), folder / name
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read_safetensors(folder / shard))
            return state, index
    pickles = [p.name for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    hint = f" (found only pickle files {pickles}, which tcts refuses to load)" if pickles else ""
    raise CheckpointError(f"no {stem}.safetensors in {folder}{hint}")


def detect_family(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which kind of model a state dict holds: ``amused``, ``meissonic``, ``vq`` or ``clip_text``."""
    for family, markers in FAMILY_MARKERS.items():
        if all(k in state_dict for k in markers):
            return family
    sample = ", ".join(sorted(state_dict)[:5])
    raise CheckpointError(
        f"unrecognised checkpoint: its keys (e.g. {sample}) match none of {', '.join(FAMILY_NAMES.values())}")


def with_article(name: str) -> str:
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def expect_family(state_dict: Mapping[str, torch.Tensor], wanted: tuple[str, ...], source: str) -> str:
    family = detect_family(state_dict)
    if family not in wanted:
        raise CheckpointError(
            f"{source} holds {with_article(FAMILY_NAMES[family])}, but "
            f"{' or '.join(with_article(FAMILY_NAMES[w]) for w in wanted)} was expected here")
    return family


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing/unexpected/mis-shaped keys.

    ``assign=True`` adopts the given tensors (for models built on the meta device) instead of copying
    them into the model's existing parameters (which keeps the parameters' dtype and device)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def short(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … ({len(items)} in all)" if len(items) > 8 else "")
        parts = [f"missing keys: {short(missing)}" if missing else "",
                 f"unexpected keys: {short(unexpected)}" if unexpected else "",
                 f"shape mismatches: {short(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source} does not fit the {type(model).__name__} built from its config; "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)


def build_on_meta(model_cls: Callable[[Mapping[str, Any]], nn.Module], config: Mapping[str, Any]) -> nn.Module:
    """Build a model without allocating or initialising weights; :func:`load_strict` then adopts the file's
    tensors (``assign=True``), so loading needs one copy of the weights in memory, not two."""
    with torch.device("meta"):
        return model_cls(config)


def _indices(state_dict: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def uvit_config_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                                micro_cond_encode_dim: int = 256) -> dict:
    """Infer a ``UVit2DModel`` config from a single transformer file.

    Sizes come from the shapes. Two things are not in the shapes: the micro-condition encoding width
    (256 in the released models; pass another value for fine-tunes) and the head counts, taken as
    64-dim heads like the released models (16 heads at 1024, 12 at 768).
    """
    expect_family(state_dict, ("amused",), "this file")
    hidden, text_width = state_dict["encoder_proj.weight"].shape
    vocab, in_channels = state_dict["embed.embeddings.weight"].shape
    block_channels = state_dict["embed.conv.weight"].shape[0]
    cond_in = state_dict["cond_embed.linear_1.weight"].shape[1]
    micro = 5 * micro_cond_encode_dim
    if cond_in <= micro:
        raise CheckpointError(
            f"cannot infer the pooled text width: cond_embed takes {cond_in} features, not more than the "
            f"{micro} of the micro-conditions (micro_cond_encode_dim={micro_cond_encode_dim}); "
            "provide the transformer's config.json")
    downsample = "down_block.downsample.conv.weight" in state_dict
    return {
        "_class_name": "UVit2DModel",
        "hidden_size": int(hidden),
        "use_bias": any(k.endswith(".bias") for k in state_dict),
        "cond_embed_dim": int(cond_in - micro),
        "micro_cond_encode_dim": micro_cond_encode_dim,
        "micro_cond_embed_dim": micro,
        "encoder_hidden_size": int(text_width),
        "vocab_size": int(vocab),
        "codebook_size": int(state_dict["mlm_layer.conv2.weight"].shape[0]),
        "in_channels": int(in_channels),
        "block_out_channels": int(block_channels),
        "num_res_blocks": _indices(state_dict, "down_block.res_blocks."),
        "downsample": downsample,
        "upsample": "up_block.upsample.conv.weight" in state_dict,
        "block_num_heads": max(1, int(block_channels) // 64),
        "num_hidden_layers": _indices(state_dict, "transformer_layers."),
        "num_attention_heads": max(1, int(hidden) // 64),
        "intermediate_size": int(state_dict["transformer_layers.0.ff.net.2.weight"].shape[1]),
        "layer_norm_eps": 1e-6,
        "ln_elementwise_affine": True,
        "sample_size": 32 if downsample else 16,
    }


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def cast_floating(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    return module.to(dtype=dtype)


GeneratorBuilder = Callable[[Mapping[str, Any]], nn.Module]


def generator_builders() -> dict[str, tuple[GeneratorBuilder, Callable[[Mapping[str, torch.Tensor]], dict]]]:
    """Family -> (model class, config-from-state-dict function) for every generator family."""
    from .models.uvit import UVit2DTransformer

    builders: dict[str, tuple[GeneratorBuilder, Callable]] = {
        "amused": (UVit2DTransformer, uvit_config_from_state_dict)}
    try:
        from .models.meissonic import MeissonicTransformer, meissonic_config_from_state_dict
        builders["meissonic"] = (MeissonicTransformer, meissonic_config_from_state_dict)
    except ImportError:  # pragma: no cover - family not available
        pass
    return builders


def family_of_config(config: Mapping[str, Any]) -> str:
    name = config.get("_class_name", "")
    return {"UVit2DModel": "amused", "Transformer2DModel": "meissonic"}.get(name, "")


def load_transformer(path: str | Path, *, dtype: torch.dtype = torch.float32, variant: str | None = None,
                     config: Mapping[str, Any] | None = None) -> nn.Module:
    """A generator from a diffusers ``transformer/`` folder or a single safetensors file."""
    path = Path(path)
    if path.is_dir():
        state, source = read_sharded_or_single(path, "diffusion_pytorch_model", variant)
        config = dict(config or read_json(path / "config.json"))
    else:
        state, source = read_safetensors(path), path
        config = config or sidecar_config(path, ("UVit2DModel", "Transformer2DModel"))
    family = expect_family(state, ("amused", "meissonic"), str(source))
    builders = generator_builders()
    if family not in builders:
        raise CheckpointError(f"{source}: the {FAMILY_NAMES[family]} family is not available in this build")
    model_cls, infer = builders[family]
    if config is None:
        config = infer(state)
    elif family_of_config(config) and family_of_config(config) != family:
        raise CheckpointError(f"{source} holds {with_article(FAMILY_NAMES[family])} but its config describes "
                              f"{config.get('_class_name')}")
    model = build_on_meta(model_cls, config)
    load_strict(model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, str(source),
                assign=True)
    return model.eval().requires_grad_(False)


def load_vq(path: str | Path, *, config: Mapping[str, Any] | None = None, norm_num_groups: int | None = None):
    """The VQ-GAN (always fp32: the reference produces NaN in fp16) from a folder or single file."""
    from .models.vq import VQModel, vq_config_from_state_dict

    path = Path(path)
    if path.is_dir():
        state, source = read_sharded_or_single(path, "diffusion_pytorch_model", None)
        config = dict(config or read_json(path / "config.json"))
    else:
        state, source = read_safetensors(path), path
        config = config or sidecar_config(path, ("VQModel",))
    expect_family(state, ("vq",), str(source))
    if config is None:
        config = vq_config_from_state_dict(state, norm_num_groups=norm_num_groups)
    model = build_on_meta(VQModel, config)
    load_strict(model, {k: v.float() for k, v in state.items()}, str(source), assign=True)
    return model.eval().requires_grad_(False)


def load_text_encoder(path: str | Path, tokenizer_folder: str | Path, *, dtype: torch.dtype = torch.float32):
    """CLIP text encoder (folder with ``config.json`` + ``model.safetensors``, or a single file) + tokenizer."""
    from .text import TextEncoder, build_clip_text_model, clip_config_from_state_dict, load_tokenizer

    path = Path(path)
    if path.is_dir():
        state, source = read_sharded_or_single(path, "model", None)
        config = read_json(path / "config.json")
    else:
        state, source = read_safetensors(path), path
        config = sidecar_config(path, ("clip_text_model",))
    expect_family(state, ("clip_text",), str(source))
    if config is None:
        config = clip_config_from_state_dict(state)
    try:
        model = build_clip_text_model(config, {k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit its CLIP text config: {exc}") from exc
    return TextEncoder(model.to(dtype=dtype), load_tokenizer(tokenizer_folder))

"""Loader nodes: a diffusers-layout folder, or split single files as ComfyUI users keep them."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import folder_paths
from .api import io

from ..tcts.checkpoints import load_transformer, load_vq
from ..tcts.model_folder import ModelFolder, recommended_dimensions
from ..tcts.settings import REFERENCE, ModelSettings, Sampling, resolve_sampling
from . import bridge
from .clip import clip_from_file, clip_from_folder
from .folders import MODELS_FOLDER, named_folders
from .types import LOADERS_CATEGORY, GeneratorBundle, ModelType, VQBundle, VQType

DTYPES = ["auto", "fp32", "fp16", "bf16"]


def model_folders() -> dict[str, Path]:
    """Name -> path of every diffusers-layout folder under the ``tcts`` and ``diffusers`` model paths."""
    return named_folders((MODELS_FOLDER, "diffusers"), lambda child: (child / "model_index.json").is_file())


def resolve_model_folder(name: str) -> Path:
    """A listed folder by name; anything else (including ``../`` tricks) is refused."""
    folders = model_folders()
    if name not in folders:
        listed = ", ".join(sorted(folders)) or "none"
        raise ValueError(f"model folder {name!r} is not among the installed models ({listed}); put diffusers-"
                         f"layout folders under models/{MODELS_FOLDER} or models/diffusers")
    return folders[name]


def resolve_file(kind: str, name: str) -> Path:
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{kind} file name {name!r} must be a name from the list, not a path")
    return Path(folder_paths.get_full_path_or_raise(kind, name))


def clip_dtype():
    """fp32 when the text encoder runs on the CPU (ComfyUI's default there is fp16 storage, which moves the
    conditioning by ~1e-3 and so changes sampled tokens against the reference); ComfyUI's choice on GPUs."""
    import comfy.model_management as mm
    import torch

    return torch.float32 if mm.text_encoder_device().type == "cpu" else None


def bundle_generator(model, name: str, schedule: str, vq: VQBundle | None, dtype: str,
                     settings: ModelSettings | None = None) -> GeneratorBundle:
    patcher = bridge.wrap_generator(model, bridge.generator_dtype(model, dtype))
    vq_factor = int(vq.model.downscale_factor) if vq is not None else 16
    return GeneratorBundle(patcher=patcher, name=name, schedule=schedule, vq_factor=vq_factor, vq=vq,
                           settings=settings or ModelSettings())


def recommended(bundle: GeneratorBundle) -> tuple[Sampling, tuple[int, int]]:
    """What the loader outputs for the samplers: the folder's settings over the reference defaults, and the
    recommended (width, height)."""
    sampling = resolve_sampling(Sampling(), bundle.settings, replace(REFERENCE, schedule=bundle.schedule)).sampling
    return sampling, recommended_dimensions(bundle.model, bundle.vq_factor, bundle.settings)


class LoadMaskedModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSLoadModel", display_name="Load Masked Generative Model", category=LOADERS_CATEGORY,
            description="Loads a diffusers-layout aMUSEd or Meissonic folder (transformer, VQ, text encoder, "
                        "tokenizer) from models/tcts or models/diffusers.",
            inputs=[
                io.Combo.Input("model_name", options=sorted(model_folders()),
                               tooltip="a folder with model_index.json under models/tcts or models/diffusers"),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="transformer precision; auto = fp32 on CPU, bf16/fp16 on GPU. The VQ always "
                                       "runs in fp32."),
            ],
            outputs=[ModelType.Output(display_name="model"), VQType.Output(display_name="vq"),
                     io.Clip.Output(display_name="clip"),
                     io.Int.Output(display_name="steps", tooltip="the steps this model recommends (its "
                                   "tcts_settings.json, else the reference's 12): connect to a sampler's steps"),
                     io.Float.Output(display_name="cfg", tooltip="the guidance scale this model recommends (else "
                                     "the reference's 10)"),
                     io.Int.Output(display_name="width", tooltip="the width this model recommends (else the size "
                                   "it was trained at)"),
                     io.Int.Output(display_name="height", tooltip="the height this model recommends")])

    @classmethod
    def execute(cls, model_name: str, dtype: str = "auto") -> io.NodeOutput:
        folder = ModelFolder.open(resolve_model_folder(model_name))
        transformer, vq_model = folder.transformer(), folder.vq()
        folder.check(transformer, vq_model, folder.shells()["text_encoder"])
        clip = clip_from_folder(folder.root / "text_encoder", folder.root / "tokenizer", dtype=clip_dtype())
        vq = VQBundle(patcher=bridge.wrap_vq(vq_model), name=model_name)
        bundle = bundle_generator(transformer, model_name, folder.schedule, vq, dtype, folder.settings)
        sampling, (width, height) = recommended(bundle)
        return io.NodeOutput(bundle, vq, clip, sampling.steps, sampling.cfg, width, height)


class LoadMaskedTransformer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSLoadTransformer", display_name="Load Masked Generative Transformer",
            category=LOADERS_CATEGORY,
            description="Loads a single aMUSEd or Meissonic transformer .safetensors from models/diffusion_models. "
                        "The config comes from the file's metadata, a <name>.json or config.json beside it, or is "
                        "inferred from the weights.",
            inputs=[io.Combo.Input("transformer_name", options=folder_paths.get_filename_list("diffusion_models")),
                    io.Combo.Input("dtype", options=DTYPES, default="auto")],
            outputs=[ModelType.Output(display_name="model")])

    @classmethod
    def execute(cls, transformer_name: str, dtype: str = "auto") -> io.NodeOutput:
        model = load_transformer(resolve_file("diffusion_models", transformer_name))
        return io.NodeOutput(bundle_generator(model, transformer_name, "cosine", None, dtype))


class LoadVQ(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSLoadVQ", display_name="Load VQ-GAN", category=LOADERS_CATEGORY,
            description="Loads the aMUSEd/Meissonic VQ-GAN (.safetensors) from models/vae; runs in fp32.",
            inputs=[io.Combo.Input("vq_name", options=folder_paths.get_filename_list("vae"))],
            outputs=[VQType.Output(display_name="vq")])

    @classmethod
    def execute(cls, vq_name: str) -> io.NodeOutput:
        model = load_vq(resolve_file("vae", vq_name))
        return io.NodeOutput(VQBundle(patcher=bridge.wrap_vq(model), name=vq_name))


class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSLoadTextEncoder", display_name="Load Masked Generative Text Encoder",
            category=LOADERS_CATEGORY,
            description="Loads a CLIP-L (aMUSEd) or CLIP-H (Meissonic) text encoder with projection as a standard "
                        "CLIP whose encoding equals the reference (penultimate layer, projected pooled output). "
                        "A core CLIPLoader is not equivalent.",
            inputs=[io.Combo.Input("clip_name", options=sorted(set(folder_paths.get_filename_list("text_encoders"))))],
            outputs=[io.Clip.Output(display_name="clip")])

    @classmethod
    def execute(cls, clip_name: str) -> io.NodeOutput:
        return io.NodeOutput(clip_from_file(resolve_file("text_encoders", clip_name), dtype=clip_dtype()))


NODES = [LoadMaskedModel, LoadMaskedTransformer, LoadVQ, LoadTextEncoder]

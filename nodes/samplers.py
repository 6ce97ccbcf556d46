"""Sampler nodes: one per strategy family, all with the same inputs and a TCTS_TOKENS output.

Each node unpacks its sockets, calls ``tcts.pipeline.generate_tokens`` with its selection rule, and
packs the tokens; img2img (start tokens + strength) and inpaint (start tokens + mask) are optional.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from .api import io

from ..tcts.images import mask_to_token_grid
from ..tcts.pipeline import (decode_tokens, generate_tokens, img2img_start, make_generators, noise_for_img2img,
                             start_for_inpaint, text_condition, token_grid)
from ..tcts.sampling import SCHEDULES
from . import bridge
from .conditioning import text_condition_from_comfy
from .types import SAMPLERS_CATEGORY, GeneratorBundle, ModelType, TokenGrid, TokensType

PREVIEWS = ["colours", "decode", "none"]
MODEL_SCHEDULE = "model default"


def common_inputs() -> list:
    """The inputs every sampler node shares (same names and order on every strategy)."""
    return [
        ModelType.Input("model"),
        io.Conditioning.Input("positive"),
        io.Conditioning.Input("negative"),
        io.Int.Input("width", default=512, min=16, max=4096, step=16,
                     tooltip="image width in px (a multiple of 16, or 32 for models that downsample); ignored "
                             "with start tokens"),
        io.Int.Input("height", default=512, min=16, max=4096, step=16),
        io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="image i uses seed + i"),
        io.Int.Input("steps", default=12, min=1, max=200),
        io.Float.Input("cfg", default=10.0, min=0.0, max=50.0, step=0.1,
                       tooltip="classifier-free guidance in logit space; 1 disables the negative pass"),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        io.Combo.Input("schedule", options=[*SCHEDULES, MODEL_SCHEDULE], default="cosine",
                       tooltip="how many tokens stay masked after each step; 'model default' = the checkpoint's "
                               "scheduler config (the reference inpaint uses linear)"),
        io.Float.Input("choice_temperature", default=2.0, min=0.0, max=20.0, step=0.1,
                       tooltip="start of the annealed (to 0) noise on the choice of positions"),
        io.Float.Input("temperature", default=1.0, min=0.01, max=10.0, step=0.01,
                       tooltip="token sampling temperature"),
        io.Combo.Input("preview", options=PREVIEWS, default="colours",
                       tooltip="colours: cheap token-colour map; decode: run the VQ decoder every step (models "
                               "loaded with their VQ); none"),
        TokensType.Input("start_tokens", optional=True,
                         tooltip="from VQ Encode: img2img (with strength) or inpaint (with mask)"),
        io.Mask.Input("mask", optional=True, tooltip="inpaint: 1 = regenerate (needs start tokens)"),
        io.Float.Input("strength", default=0.5, min=0.01, max=1.0, step=0.01, optional=True,
                       tooltip="img2img/inpaint: fraction of the steps that run"),
        io.Combo.Input("strength_mode", options=["reference", "full"], default="reference", optional=True,
                       tooltip="reference: strength 1.0 masks nothing (diffusers quirk); full: masks everything"),
        io.Boolean.Input("draw_on_device", default=False, optional=True,
                         tooltip="draw tokens with generators on the GPU instead of the reference's CPU generators: "
                                 "several times faster per step on a GPU, same image for the same seed on the same "
                                 "GPU, but other images than diffusers/the CPU (no effect on the CPU)"),
    ]


_WARNED_SIZES: set[tuple[str, int, int]] = set()


def warn_once_about_size(model: GeneratorBundle, width: int, height: int) -> None:
    """Log, once per model and size, that the size is not one the model was trained at (it still runs)."""
    warning = model.settings.size_warning(width, height)
    if warning and (model.name, width, height) not in _WARNED_SIZES:
        _WARNED_SIZES.add((model.name, width, height))
        logging.warning("tcts: %s: %s", model.name, warning)


def run_sampler(rule: str, rule_options: dict[str, Any], model: GeneratorBundle, positive, negative, width: int,
                height: int, batch_size: int, steps: int, cfg: float, seed: int, schedule: str,
                choice_temperature: float, temperature: float, preview: str = "colours",
                start_tokens: TokenGrid | None = None, mask: torch.Tensor | None = None, strength: float = 0.5,
                strength_mode: str = "reference", draw_on_device: bool = False,
                extra_patchers: Sequence[Any] = ()) -> TokenGrid:
    generator = model.model
    if schedule == MODEL_SCHEDULE:
        schedule = model.settings.schedule or model.schedule
    pos = text_condition_from_comfy(positive, "positive", generator.text_hidden_size, generator.pooled_size)
    neg = None
    if cfg != 1.0:
        if negative is None:
            raise ValueError("negative conditioning is missing (cfg != 1 needs it; encode an empty prompt)")
        neg = text_condition_from_comfy(negative, "negative", generator.text_hidden_size, generator.pooled_size)
    mask_id = generator.vocab_size - 1
    start = fixed = None
    start_step, smr = 0, 1
    if start_tokens is not None:
        if start_tokens.codebook_size != generator.codebook_size:
            raise ValueError(f"start tokens come from a {start_tokens.codebook_size}-code VQ but the model predicts "
                             f"{generator.codebook_size} codes")
        width, height = start_tokens.width, start_tokens.height
        images = start_tokens.tokens.shape[0]
        if images > 1 and batch_size not in (1, images):
            raise ValueError(f"start tokens hold {images} images but batch_size is {batch_size}")
        batch_size = max(batch_size, images)
    elif mask is not None:
        raise ValueError("a mask needs start tokens (VQ Encode the image to inpaint)")
    grid = token_grid(generator, width, height, model.vq_factor)
    warn_once_about_size(model, width, height)
    generators = make_generators(seed, batch_size)
    if start_tokens is not None:
        encoded = start_tokens.tokens.to(torch.long).cpu().expand(batch_size, *grid)
        if mask is not None:
            pixel_mask = mask if mask.ndim == 3 else mask[None]
            if not (pixel_mask > 0).any():
                raise ValueError("inpaint mask is empty: nothing to regenerate. Paint one with Open in MaskEditor "
                                 "(LoadImage: transparent = regenerate) or connect a MASK with 1 where to repaint")
            if tuple(pixel_mask.shape[1:]) != (height, width):
                raise ValueError(f"mask is {pixel_mask.shape[2]}x{pixel_mask.shape[1]} px but the image is "
                                 f"{width}x{height}; give a mask of the image's size")
            start, fixed, smr = start_for_inpaint(encoded, mask_to_token_grid(pixel_mask, grid), mask_id)
            start_step = img2img_start(steps, strength) if strength < 1.0 else 0
        else:
            start_step = img2img_start(steps, strength, strength_mode)
            start = noise_for_img2img(encoded, steps, start_step, schedule, mask_id, generators, strength_mode)
    cond = text_condition(pos, neg, width, height, batch_size)
    patchers = [model.patcher, *extra_patchers]  # e.g. a TCTS selector, loaded together with the generator
    patchers += [model.vq.patcher] if preview == "decode" and model.vq is not None else []
    bridge.load_for_use(*patchers)
    decode = (lambda t: decode_tokens(model.vq.model, t)) if model.vq is not None else None
    callback = bridge.progress_callback(steps, preview, mask_id, model.vq.model if model.vq is not None else None,
                                        model.vq_factor, decode)
    advice = "Try a smaller batch size or resolution, or the fp16/bf16 dtype in the loader."
    with bridge.unload_on_oom(f"sampling {batch_size} image(s) of {width}x{height} px", advice):
        tokens = generate_tokens(generator, cond, sampler=rule, steps=steps, cfg=cfg, grid=grid, tokens=start,
                                 fixed=fixed, start_step=start_step, starting_mask_ratio=smr, schedule=schedule,
                                 choice_temperature=(choice_temperature, 0.0), sampling_temperature=temperature,
                                 rule_options=rule_options, generators=generators, draw_on_device=draw_on_device,
                                 callback=callback)
    return TokenGrid(tokens=bridge.to_output(tokens), codebook_size=int(generator.codebook_size), width=width,
                     height=height, family=model.family,
                     extras={"mask_id": mask_id, "prompt": pos.texts, "sampler": rule, "seed": seed})


class PersistentSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSPersistentSampler", display_name="Masked Sampler (Persistent: Purity / Uniform)",
            category=SAMPLERS_CATEGORY,
            description="Fixed samplers: once a token is kept it never changes. purity = MaskGIT/aMUSEd confidence "
                        "(reproduces the reference pipeline for the same seed); uniform = random order.",
            inputs=[io.Combo.Input("sampler", options=["purity", "uniform"], default="purity"), *common_inputs()],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, sampler: str, **kwargs) -> io.NodeOutput:
        return io.NodeOutput(run_sampler(sampler, {}, **kwargs))


class RevocableSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSRevocableSampler", display_name="Masked Sampler (Revocable: Random Revoke)",
            category=SAMPLERS_CATEGORY,
            description="Revocable sampler: the kept set is re-drawn over all positions every step, so earlier "
                        "tokens can be revoked and resampled (Lee et al. 2023, RR baseline).",
            inputs=[io.Combo.Input("sampler", options=["random-revoke"], default="random-revoke"),
                    io.Boolean.Input("repredict_visible", default=False,
                                     tooltip="re-predict visible tokens instead of copying them (only for generators "
                                             "trained on all positions; aMUSEd/Meissonic: off)"),
                    *common_inputs()],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, sampler: str, repredict_visible: bool, **kwargs) -> io.NodeOutput:
        return io.NodeOutput(run_sampler(sampler, {"repredict_visible": repredict_visible}, **kwargs))


NODES = [PersistentSampler, RevocableSampler]

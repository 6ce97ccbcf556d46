"""Sampler nodes: one per strategy family, all with the same inputs and a TCTS_TOKENS output.

Each node unpacks its sockets into :class:`SamplerInputs`, builds its rule, runs the engine's job
(``tcts.engine.run``) and packs the tokens; img2img (start tokens + strength) and inpaint (start tokens +
mask) are optional.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from ..tcts.engine import Job, condition, run
from ..tcts.pipeline import decode_tokens
from ..tcts.sampling.registry import RuleOptions, make_rule
from ..tcts.sampling.rules import RevocableOptions, Rule
from ..tcts.sampling.schedules import SCHEDULES
from ..tcts.settings import Sampling
from ..tcts.starts import EncodedImage, ImageToImage, Inpaint, Start, TextToImage, batch_size, size_of
from . import bridge
from .api import io
from .conditioning import text_condition_from_comfy
from .types import SAMPLERS_CATEGORY, GeneratorBundle, ModelType, TokenGrid, TokensType

PREVIEWS = ["colours", "decode", "none"]
#: the choices of the per-strategy nodes (their options at the defaults; the Rule nodes set them)
PERSISTENT = ("purity", "uniform", "halton", "entropy-bounded", "noise-regularized")
REVOCABLE = ("random-revoke", "remdm")
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


@dataclass
class SamplerInputs:
    """The inputs every sampler node shares (``common_inputs``), as the node received them."""

    model: GeneratorBundle
    positive: Any
    negative: Any
    width: int
    height: int
    batch_size: int
    steps: int
    cfg: float
    seed: int
    schedule: str
    choice_temperature: float
    temperature: float
    preview: str = "colours"
    start_tokens: TokenGrid | None = None
    mask: torch.Tensor | None = None
    strength: float = 0.5
    strength_mode: str = "reference"
    draw_on_device: bool = False

    @classmethod
    def of(cls, values: dict[str, Any]) -> "SamplerInputs":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def start(self) -> Start:
        """Text to image, img2img (start tokens) or inpaint (start tokens + mask)."""
        if self.start_tokens is None:
            if self.mask is not None:
                raise ValueError("a mask needs start tokens (VQ Encode the image to inpaint)")
            return TextToImage(self.width, self.height)
        grid = self.start_tokens
        image = EncodedImage(tokens=grid.tokens, width=grid.width, height=grid.height, codebook_size=grid.codebook_size)
        if self.mask is not None:
            return Inpaint(image, self.mask, self.strength)
        return ImageToImage(image, self.strength, self.strength_mode)

    def sampling(self) -> Sampling:
        schedule = self.schedule if self.schedule != MODEL_SCHEDULE else (self.model.settings.schedule or
                                                                          self.model.schedule)
        return Sampling(steps=self.steps, cfg=self.cfg, schedule=schedule,
                        choice_temperature=(self.choice_temperature, 0.0), temperature=self.temperature,
                        draw_on_device=self.draw_on_device)


def job_for(rule: Rule, inputs: SamplerInputs, preview_steps: int | None = None) -> Job:
    """The engine job of a sampler node: conditions from its sockets, its start, settings and rule."""
    generator = inputs.model.model
    start = inputs.start()
    batch = batch_size(start, inputs.batch_size)
    pos = text_condition_from_comfy(inputs.positive, "positive", generator.text_hidden_size, generator.pooled_size)
    neg = None
    if inputs.cfg != 1.0:
        if inputs.negative is None:
            raise ValueError("negative conditioning is missing (cfg != 1 needs it; encode an empty prompt)")
        neg = text_condition_from_comfy(inputs.negative, "negative", generator.text_hidden_size,
                                        generator.pooled_size)
    return Job(condition=condition(pos, neg, start, batch), sampling=inputs.sampling(), rule=rule, start=start,
               seed=inputs.seed)


def sample_tokens(rule: Rule, inputs: SamplerInputs, extra_patchers: Sequence[Any] = ()) -> TokenGrid:
    """Run a sampler node: the job through the engine under ComfyUI's model manager, with progress, live
    previews and Cancel, and a clear message (models unloaded) when memory runs out."""
    model = inputs.model
    job = job_for(rule, inputs)
    width, height = size_of(job.start)
    warn_once_about_size(model, width, height)
    patchers = [model.patcher, *extra_patchers]  # e.g. a TCTS selector, loaded together with the generator
    patchers += [model.vq.patcher] if inputs.preview == "decode" and model.vq is not None else []
    bridge.load_for_use(*patchers)
    decode = (lambda t: decode_tokens(model.vq.model, t)) if model.vq is not None else None
    mask_id = model.model.mask_token_id
    job.callback = bridge.progress_callback(inputs.steps, inputs.preview, mask_id,
                                            model.vq.model if model.vq is not None else None, model.vq_factor, decode)
    batch = job.condition.batch_size
    advice = "Try a smaller batch size or resolution, or the fp16/bf16 dtype in the loader."
    with bridge.unload_on_oom(f"sampling {batch} image(s) of {width}x{height} px", advice):
        tokens = run(model.model, job, model.vq_factor)
    return TokenGrid(tokens=bridge.to_output(tokens), codebook_size=int(model.model.codebook_size), width=width,
                     height=height, family=model.family,
                     extras={"mask_id": mask_id, "sampler": rule.name, "seed": inputs.seed})


class PersistentSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSPersistentSampler", display_name="Masked Sampler (Persistent: Purity / Uniform / …)",
            category=SAMPLERS_CATEGORY,
            description="Fixed samplers: once a token is kept it never changes. purity = MaskGIT/aMUSEd confidence "
                        "(reproduces the reference pipeline for the same seed); uniform = random order; halton = a "
                        "fixed low-discrepancy spatial order; entropy-bounded = as many tokens per step as an "
                        "entropy budget allows (may finish early); noise-regularized = purity with noise on the "
                        "logits that score the choice. Their options: the Rule nodes.",
            inputs=[io.Combo.Input("sampler", options=list(PERSISTENT), default="purity"), *common_inputs()],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, sampler: str, **inputs) -> io.NodeOutput:
        return io.NodeOutput(sample_tokens(make_rule(sampler), SamplerInputs.of(inputs)))


class RevocableSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSRevocableSampler", display_name="Masked Sampler (Revocable: Random Revoke / ReMDM)",
            category=SAMPLERS_CATEGORY,
            description="Revocable samplers: earlier tokens can be revoked and resampled. random-revoke = the kept "
                        "set is re-drawn over all positions every step (Lee et al. 2023, RR baseline); remdm = a "
                        "few percent of the decoded tokens are re-masked each step (ReMDM; options: Rule: ReMDM).",
            inputs=[io.Combo.Input("sampler", options=list(REVOCABLE), default="random-revoke"),
                    io.Boolean.Input("repredict_visible", default=False,
                                     tooltip="re-predict visible tokens instead of copying them (only for generators "
                                             "trained on all positions; aMUSEd/Meissonic: off)"),
                    *common_inputs()],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, sampler: str, repredict_visible: bool, **inputs) -> io.NodeOutput:
        options = RuleOptions(revocable=RevocableOptions(repredict_visible=repredict_visible))
        return io.NodeOutput(sample_tokens(make_rule(sampler, options), SamplerInputs.of(inputs)))


NODES = [PersistentSampler, RevocableSampler]

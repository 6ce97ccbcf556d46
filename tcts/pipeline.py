"""A loaded model folder as one object for Python users and the CLI.

``Pipeline.generate`` encodes the prompts, builds the :class:`~tcts.engine.Job` and runs it through the
engine (``tcts/engine.py``), then decodes the tokens. Settings left unset come from the folder's
``tcts_settings.json``, else the reference defaults of diffusers ``AmusedPipeline`` (12 steps, cfg 10,
negative prompt "" encoded, micro-conditions ``[width, height, 0, 0, 6]``, choice temperature 2 -> 0, the
scheduler config's schedule), so that the same seed gives the reference's tokens.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .engine import Job, condition, run
from .errors import explain_out_of_memory
from .images import check_image_batch
from .model_folder import ModelFolder, checkpoint_size, recommended_dimensions
from .sampling.loop import StepReport
from .sampling.registry import make_rule
from .sampling.rules import Rule
from .settings import REFERENCE, ModelSettings, Resolved, Sampling, resolve_sampling
from .starts import EncodedImage, Start, TextToImage, default_schedule, size_of, token_grid
from .starts import batch_size as images_in
from .text import TextCondition, TextEncoder


@torch.inference_mode()
def encode_images(vq: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` in [0, 1] -> token ids ``[B, H/t, W/t]`` (t: the VQ's token size)."""
    images = check_image_batch(images)
    device = next(vq.parameters()).device
    return vq.encode_to_ids(images.permute(0, 3, 1, 2).to(device, torch.float32))


@torch.inference_mode()
def decode_tokens(vq: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids ``[B, h, w]`` -> IMAGE ``[B, h*t, w*t, 3]`` clipped to [0, 1] (the pipelines clip)."""
    device = next(vq.parameters()).device
    return vq.decode_ids(tokens.to(device)).clamp(0, 1).permute(0, 2, 3, 1)


@dataclass
class GenerationResult:
    tokens: torch.Tensor                  # [B, h, w]
    images: torch.Tensor                  # [B, H, W, 3] in [0, 1]
    settings: dict[str, Any] = field(default_factory=dict)
    #: where each sampling value came from: "user", "model" (the folder's tcts_settings.json) or "reference"
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class Pipeline:
    """A loaded masked generative model: generator, VQ, text encoder and the folder's settings."""

    transformer: nn.Module | None
    vq: nn.Module | None
    text_encoder: TextEncoder | None
    schedule: str = "cosine"
    name: str = ""
    #: sequential mode (``from_folder(..., sequential=True)``): how to load each component on demand, and
    #: weightless meta-device copies that answer questions about sizes and configs meanwhile
    loaders: dict[str, Callable[[], Any]] | None = None
    shells: dict[str, Any] = field(default_factory=dict)
    #: what the model folder recommends (``tcts_settings.json``; empty: the reference defaults)
    settings: ModelSettings = field(default_factory=ModelSettings)

    @property
    def sequential(self) -> bool:
        return self.loaders is not None

    def component(self, name: str) -> Any:
        """``transformer``, ``vq`` or ``text_encoder``, loaded now if the pipeline is sequential."""
        value = getattr(self, name)
        if value is None and self.loaders is not None:
            value = self.loaders[name]()
            setattr(self, name, value)
        return value

    def release(self, name: str) -> None:
        """Sequential mode: free a component's weights until it is needed again (no-op otherwise)."""
        if self.loaders is not None and getattr(self, name) is not None:
            setattr(self, name, None)
            gc.collect()

    def _shell(self, name: str) -> Any:
        value = getattr(self, name)
        return value if value is not None else self.shells[name]

    @property
    def family(self) -> str:
        return getattr(self._shell("transformer"), "family", "amused")

    @property
    def mask_token_id(self) -> int:
        return self._shell("transformer").mask_token_id

    @property
    def vq_factor(self) -> int:
        return int(self._shell("vq").downscale_factor)

    @property
    def default_size(self) -> int:
        """The side of the square size the checkpoint was trained at (selector training uses it)."""
        return checkpoint_size(self._shell("transformer"), self.vq_factor)

    @property
    def default_dimensions(self) -> tuple[int, int]:
        """(width, height) when the user gives none: the model folder's recommendation, else the square
        :attr:`default_size`."""
        return recommended_dimensions(self._shell("transformer"), self.vq_factor, self.settings)

    def resolve(self, given: Sampling | None = None, start: Start | None = None) -> Resolved:
        """Sampling settings for a run: ``given`` (``None`` fields = not given) over the folder's
        recommendations over the reference defaults (with the scheduler config's mask schedule, or the
        start's: inpaint and edit use the linear schedule like the reference inpaint pipeline)."""
        given = given or Sampling()
        if given.schedule is None and start is not None and default_schedule(start):
            given = replace(given, schedule=default_schedule(start))
        return resolve_sampling(given, self.settings, replace(REFERENCE, schedule=self.schedule))

    @classmethod
    def from_folder(cls, path: str | Path, *, dtype: torch.dtype = torch.float32, variant: str | None = None,
                    sequential: bool = False, device: str | torch.device = "cpu") -> "Pipeline":
        """Load a diffusers-layout folder (``model_index.json`` + component folders).

        ``sequential=True`` is for one-shot runs (the CLI): the components are read when
        :meth:`generate` needs them and freed after their phase (text encoder -> transformer -> VQ),
        so peak memory is about the largest component instead of all three. Checks that need only
        configs run at once on weightless meta-device copies. ``dtype`` applies to the generator and the text
        encoder (as diffusers' ``torch_dtype`` does: no fp32 copy of CLIP next to an fp16 generator); the VQ
        stays fp32 (its decoder upcasts, like the reference's ``force_upcast``)."""
        folder = ModelFolder.open(path)
        common = dict(schedule=folder.schedule, name=folder.name, settings=folder.settings)
        if sequential:
            device = torch.device(device)
            loaders = {"transformer": lambda: folder.transformer(dtype, variant).to(device),
                       "vq": lambda: folder.vq().to(device),
                       "text_encoder": lambda: _on_device(folder.text_encoder(dtype), device)}
            shells = folder.shells()
            folder.check(shells["transformer"], shells["vq"], shells["text_encoder"])
            return cls(None, None, None, loaders=loaders, shells=shells, **common)
        transformer, vq, text = folder.transformer(dtype, variant), folder.vq(), folder.text_encoder(dtype)
        folder.check(transformer, vq, text)
        return cls(transformer, vq, text, **common)

    def encode_prompts(self, prompts: Sequence[str]) -> TextCondition:
        return self.component("text_encoder").encode(list(prompts))

    def encode(self, images: torch.Tensor) -> EncodedImage:
        """A picture (IMAGE ``[B, H, W, 3]`` in [0, 1]) as the start of img2img, inpaint or an edit."""
        images = check_image_batch(images, "init image")
        token_grid(self._shell("transformer"), int(images.shape[2]), int(images.shape[1]), self.vq_factor)
        tokens = encode_images(self.component("vq"), images)
        self.release("vq")
        return EncodedImage(tokens=tokens, width=int(images.shape[2]), height=int(images.shape[1]),
                            codebook_size=int(self._shell("vq").codebook_size))

    def rule(self, sampler: str | Rule) -> Rule:
        return make_rule(sampler) if isinstance(sampler, str) else sampler

    def generate(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *,
                 sampler: str | Rule = "purity", seed: int = 0, batch_size: int = 1, sampling: Sampling | None = None,
                 start: Start | None = None, callback: Callable[[StepReport], None] | None = None
                 ) -> GenerationResult:
        """Generate ``batch_size`` images (image i uses seed + i).

        ``sampler``: a rule name (``tcts.sampling.registry.SAMPLERS``) or a built rule
        (``make_rule("tcts", RuleOptions(selector_model=...))``). ``sampling``: the settings you set
        (``Sampling(steps=16)``; the rest from the folder's ``tcts_settings.json``, else the reference).
        ``start``: text to image at the recommended size by default; ``TextToImage(w, h)``,
        ``ImageToImage(pipe.encode(image), strength)``, ``Inpaint(pipe.encode(image), mask)`` (1 = regenerate;
        linear schedule and strength 1.0 like the reference inpaint pipeline) or ``Edit(...)``."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        start = start or TextToImage(*self.default_dimensions)
        count = images_in(start, batch_size)
        if len(prompts) not in (1, count):
            raise ValueError(f"got {len(prompts)} prompts for batch size {count}")
        negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
        width, height = size_of(start)
        token_grid(self._shell("transformer"), width, height, self.vq_factor)  # size errors before any work
        resolved = self.resolve(sampling, start)
        rule = self.rule(sampler)
        advice = ("Lower the batch size or the image size (or use fp16/bf16 on a GPU)."
                  if count > 1 else "Lower the image size (or use fp16/bf16 on a GPU).")
        with explain_out_of_memory(f"generating {count} image(s) of {width}x{height} px", advice):
            positive = self.encode_prompts(prompts)
            negative = self.encode_prompts(negatives) if resolved.sampling.cfg != 1.0 else None
            self.release("text_encoder")
            job = Job(condition=condition(positive, negative, start, count), sampling=resolved.sampling,
                      rule=rule, start=start, seed=seed, callback=callback)
            tokens = run(self.component("transformer"), job, self.vq_factor)
            self.release("transformer")
            images = decode_tokens(self.component("vq"), tokens)
            self.release("vq")
        s = resolved.sampling
        return GenerationResult(tokens=tokens, images=images, origin=resolved.origin, settings=dict(
            sampler=rule.name, steps=s.steps, cfg=s.cfg, seed=seed, width=width, height=height,
            schedule=s.schedule, draw_on_device=s.draw_on_device))


def _on_device(text: TextEncoder, device: torch.device) -> TextEncoder:
    text.model.to(device)
    return text

"""Composable generation steps and a convenience pipeline over them.

The steps (``text_condition``, ``noise_for_img2img``, ``start_for_inpaint``, ``generate_tokens``,
``encode_images``, ``decode_tokens``) are what the ComfyUI nodes call one by one; ``Pipeline`` chains them
for the CLI and Python users with the reference defaults of diffusers ``AmusedPipeline`` (12 steps,
cfg 10, negative prompt "" encoded, micro-conditions ``[width, height, 0, 0, 6]``, choice temperature
2 -> 0, cosine schedule), so that the same seed gives the reference's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .checkpoints import CheckpointError, load_text_encoder, load_transformer, load_vq, read_json
from .errors import explain_out_of_memory
from .images import check_image_batch, mask_to_token_grid
from .sampling import Conditioning, StepReport, make_rule, sample
from .sampling.schedules import mask_ratio
from .settings import REFERENCE, ModelSettings, Resolved, Sampling, read_model_settings, resolve_sampling
from .text import TextCondition, TextEncoder

AESTHETIC_SCORE = 6


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


def micro_conditions(width: int, height: int, batch: int, crop: tuple[int, int] = (0, 0),
                     aesthetic: float = AESTHETIC_SCORE) -> torch.Tensor:
    """``[B, 5]`` micro-conditions ``[width, height, crop_x, crop_y, aesthetic]`` (width first, as the
    reference pipelines and the original training code)."""
    return torch.tensor([[width, height, crop[0], crop[1], aesthetic]], dtype=torch.float32).expand(batch, -1)


def make_generators(seed: int, batch: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per image (CPU unless ``device`` says otherwise): image ``i`` of a batch uses seed
    ``seed + i`` (so a batch of 2 with seed s gives the same tokens as two single runs with seeds s and s + 1)."""
    return [torch.Generator(device=device).manual_seed(int(seed) + i) for i in range(batch)]


def token_grid(model: nn.Module, width: int, height: int, vq_factor: int) -> tuple[int, int]:
    """Token grid ``(h, w)`` for a pixel size, with clear errors for sizes the model cannot take."""
    multiple = vq_factor * getattr(model, "token_grid_multiple", 1)
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value <= 0 or value % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} px for this model "
                             f"({vq_factor} px per token × {multiple // vq_factor}); got {value!r}")
    grid = (height // vq_factor, width // vq_factor)
    check = getattr(model, "check_resolution", None)
    if check is not None:
        check(*grid)
    return grid


def text_condition(positive: TextCondition, negative: TextCondition | None, width: int, height: int,
                   batch: int) -> Conditioning:
    """Repeat a 1-row (or ``batch``-row) text condition to the batch and add micro-conditions."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] == batch:
            return t
        if t.shape[0] == 1:
            return t.expand(batch, *t.shape[1:])
        raise ValueError(f"text condition has batch {t.shape[0]}; expected 1 or {batch}")
    return Conditioning(
        hidden_states=rows(positive.hidden_states), pooled=rows(positive.pooled),
        micro_conds=micro_conditions(width, height, batch),
        negative_hidden_states=None if negative is None else rows(negative.hidden_states),
        negative_pooled=None if negative is None else rows(negative.pooled))


def img2img_start(steps: int, strength: float, mode: str = "reference") -> int:
    """First step index for img2img: ``steps - int(steps * strength)`` (diffusers
    ``pipeline_amused_img2img.py``)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1]; got {strength!r}")
    if mode not in ("reference", "full"):
        raise ValueError(f"strength mode must be 'reference' or 'full'; got {mode!r}")
    start = steps - int(steps * strength)
    if start >= steps:
        raise ValueError(f"strength {strength} runs no step out of {steps}; raise strength or steps")
    return start


def noise_for_img2img(tokens: torch.Tensor, steps: int, start: int, schedule: str, mask_id: int,
                      generators: list[torch.Generator], mode: str = "reference") -> torch.Tensor:
    """Mask each token with probability ``mask_ratio(start - 1)`` before the first executed step
    (AmusedScheduler.add_noise with ``timesteps[start - 1]``; its ``torch.rand`` comes before the first
    multinomial draw).

    Quirk of the reference (``mode="reference"``): strength 1.0 gives ``start = 0`` and the index -1
    wraps to the last step, whose ratio is ~0, so *nothing* is masked and the image is only re-decoded.
    ``mode="full"`` masks everything at strength 1.0 (a pure text-to-image run).
    """
    if start == 0 and mode == "full":
        return torch.full_like(tokens, mask_id)
    ratio = mask_ratio(schedule, (start - 1) % steps, steps)
    noise = torch.cat([torch.rand((1, *tokens.shape[1:]), generator=g) for g in generators])
    return torch.where(noise.to(tokens.device) < ratio, mask_id, tokens)


def start_for_inpaint(tokens: torch.Tensor, token_mask: torch.Tensor,
                      mask_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked tokens -> mask id; returns (start tokens, fixed positions, starting mask ratio).

    ``starting_mask_ratio = mask.sum() / numel`` scales every step's count (AmusedInpaintPipeline)."""
    if token_mask.shape != tokens.shape:
        if token_mask.shape[1:] != tokens.shape[1:] or token_mask.shape[0] not in (1, tokens.shape[0]):
            raise ValueError(f"inpaint mask covers a {tuple(token_mask.shape[1:])} token grid but the image "
                             f"has {tuple(tokens.shape[1:])}; give a mask of the image's size")
        token_mask = token_mask.expand_as(tokens)
    token_mask = token_mask.to(tokens.device).bool()
    if not token_mask.any():
        raise ValueError("inpaint mask is empty: nothing to regenerate (white/1 marks the area to repaint)")
    start = torch.where(token_mask, mask_id, tokens)
    return start, ~token_mask, token_mask.sum() / token_mask.numel()


@torch.inference_mode()
def encode_images(vq: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` in [0, 1] -> token ids ``[B, H/16, W/16]``."""
    images = check_image_batch(images)
    device = next(vq.parameters()).device
    return vq.encode_to_ids(images.permute(0, 3, 1, 2).to(device, torch.float32))


@torch.inference_mode()
def decode_tokens(vq: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids ``[B, h, w]`` -> IMAGE ``[B, h*16, w*16, 3]`` clipped to [0, 1] (the pipelines clip)."""
    device = next(vq.parameters()).device
    return vq.decode_ids(tokens.to(device)).clamp(0, 1).permute(0, 2, 3, 1)


@torch.inference_mode()
def generate_tokens(model: nn.Module, cond: Conditioning, *, sampler: str = "purity", steps: int = 12,
                    cfg: float = 10.0, seed: int = 0, grid: tuple[int, int] | None = None,
                    tokens: torch.Tensor | None = None, fixed: torch.Tensor | None = None,
                    start_step: int = 0, starting_mask_ratio: float | torch.Tensor = 1,
                    schedule: str = "cosine", choice_temperature: tuple[float, float] = (2.0, 0.0),
                    sampling_temperature: float = 1.0, rule_options: dict[str, Any] | None = None,
                    generators: list[torch.Generator] | None = None, draw_on_device: bool = False,
                    callback: Callable[[StepReport], None] | None = None) -> torch.Tensor:
    """Sample a token grid with the named strategy (see ``sampling.rules.RULES``).

    ``draw_on_device``: draw the proposals with per-image generators (seeds ``seed + i``) on the model's
    device instead of the reference's CPU generators — much faster on a GPU, reproducible on the same GPU,
    but other tokens than the reference. No effect on a CPU model."""
    rule = make_rule(sampler, **(rule_options or {}))
    generators = generators or make_generators(seed, cond.batch_size)
    device = next(model.parameters()).device
    draw_generators = (make_generators(seed, cond.batch_size, device)
                       if draw_on_device and device.type != "cpu" else None)
    return sample(model, cond, rule, steps=steps, grid=grid, tokens=tokens, fixed=fixed,
                  generators=generators, draw_generators=draw_generators, cfg=cfg, schedule=schedule,
                  choice_temperature=choice_temperature, sampling_temperature=sampling_temperature,
                  start_step=start_step, starting_mask_ratio=starting_mask_ratio, callback=callback)


@dataclass
class GenerationResult:
    tokens: torch.Tensor                  # [B, h, w]
    images: torch.Tensor                  # [B, H, W, 3] in [0, 1]
    settings: dict[str, Any] = field(default_factory=dict)
    #: where each sampling value came from: "user", "model" (the folder's tcts_settings.json) or "reference"
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class Pipeline:
    """A loaded masked generative model: generator, VQ, text encoder and scheduler defaults."""

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
            import gc

            gc.collect()

    def _shell(self, name: str) -> Any:
        value = getattr(self, name)
        return value if value is not None else self.shells[name]

    @property
    def family(self) -> str:
        return getattr(self._shell("transformer"), "family", "amused")

    @property
    def mask_token_id(self) -> int:
        return self._shell("transformer").vocab_size - 1

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

    def resolve(self, **given: Any) -> Resolved:
        """Sampling settings for a run: ``given`` (``None`` = not given) over the folder's recommendations over
        the reference defaults (with the scheduler config's mask schedule)."""
        return resolve_sampling(given, self.settings, Sampling(**{**REFERENCE.__dict__, "schedule": self.schedule}))

    @classmethod
    def from_folder(cls, path: str | Path, *, dtype: torch.dtype = torch.float32, variant: str | None = None,
                    sequential: bool = False, device: str | torch.device = "cpu") -> "Pipeline":
        """Load a diffusers-layout folder (``model_index.json`` + component folders).

        ``sequential=True`` is for one-shot runs (the CLI): the components are read when
        :meth:`generate` needs them and freed after their phase (text encoder -> transformer -> VQ),
        so peak memory is about the largest component instead of all three. Checks that need only
        configs run at once on weightless meta-device copies."""
        root = Path(path)
        if not root.exists():
            raise CheckpointError(f"model folder {root} does not exist")
        if not (root / "model_index.json").is_file():
            raise CheckpointError(f"{root} is not a diffusers model folder: no model_index.json "
                                  "(expected transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/)")
        scheduler = read_json(root / "scheduler" / "scheduler_config.json") \
            if (root / "scheduler" / "scheduler_config.json").is_file() else {}
        if sequential:
            return cls._sequential(root, scheduler, dtype, variant, torch.device(device))
        transformer = load_transformer(root / "transformer", dtype=dtype, variant=variant)
        mask_id = scheduler.get("mask_token_id", transformer.vocab_size - 1)
        if mask_id != transformer.vocab_size - 1:
            raise CheckpointError(f"scheduler mask_token_id {mask_id} is not the transformer's last "
                                  f"embedding row {transformer.vocab_size - 1}")
        vq = load_vq(root / "vqvae")
        text = load_text_encoder(root / "text_encoder", root / "tokenizer")
        check_compatible(transformer, vq, text)
        return cls(transformer, vq, text, schedule=scheduler.get("masking_schedule", "cosine"), name=root.name,
                   settings=read_model_settings(root))

    @classmethod
    def _sequential(cls, root: Path, scheduler: dict, dtype: torch.dtype, variant: str | None,
                    device: torch.device) -> "Pipeline":
        loaders = {
            "transformer": lambda: load_transformer(root / "transformer", dtype=dtype, variant=variant).to(device),
            "vq": lambda: load_vq(root / "vqvae").to(device),
            "text_encoder": lambda: _on_device(load_text_encoder(root / "text_encoder", root / "tokenizer"), device),
        }
        shells = config_shells(root)
        mask_id = scheduler.get("mask_token_id", shells["transformer"].vocab_size - 1)
        if mask_id != shells["transformer"].vocab_size - 1:
            raise CheckpointError(f"scheduler mask_token_id {mask_id} is not the transformer's last "
                                  f"embedding row {shells['transformer'].vocab_size - 1}")
        check_compatible(shells["transformer"], shells["vq"], shells["text_encoder"])
        return cls(None, None, None, schedule=scheduler.get("masking_schedule", "cosine"), name=root.name,
                   loaders=loaders, shells=shells, settings=read_model_settings(root))

    def encode_prompts(self, prompts: Sequence[str]) -> TextCondition:
        return self.component("text_encoder").encode(list(prompts))

    def generate(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *,
                 sampler: str = "purity", steps: int | None = None, cfg: float | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, batch_size: int = 1,
                 schedule: str | None = None, choice_temperature: tuple[float, float] | None = None,
                 sampling_temperature: float | None = None, init_image: torch.Tensor | None = None,
                 strength: float | None = None, strength_mode: str = "reference", mask: torch.Tensor | None = None,
                 rule_options: dict[str, Any] | None = None, draw_on_device: bool = False,
                 callback: Callable[[StepReport], None] | None = None) -> GenerationResult:
        """Text-to-image; img2img with ``init_image`` (+ ``strength``); inpaint with ``init_image`` +
        ``mask`` (1 = regenerate; the reference inpaint pipeline uses the linear schedule, our default
        for inpaint too). ``strength`` defaults to the reference's: 0.5 for img2img, 1.0 for inpaint.
        Settings left ``None`` come from the model folder's ``tcts_settings.json``, else the reference
        (:meth:`resolve`); ``result.origin`` says which.
        ``draw_on_device``: see :func:`generate_tokens` (GPU speed instead of reference tokens)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1; got {batch_size}")
        if len(prompts) not in (1, batch_size):
            raise ValueError(f"got {len(prompts)} prompts for batch size {batch_size}")
        negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
        if init_image is not None:
            init_image = check_image_batch(init_image, "init image")
            height, width = int(init_image.shape[1]), int(init_image.shape[2])
        width = self.default_dimensions[0] if width is None else width
        height = self.default_dimensions[1] if height is None else height
        grid = token_grid(self._shell("transformer"), width, height, self.vq_factor)
        if mask is not None and init_image is None:
            raise ValueError("a mask needs an init image to inpaint")
        resolved = self.resolve(steps=steps, cfg=cfg, schedule=schedule or ("linear" if mask is not None else None),
                                choice_temperature=choice_temperature, temperature=sampling_temperature)
        steps, cfg, schedule = resolved.sampling.steps, resolved.sampling.cfg, resolved.sampling.schedule
        choice_temperature = resolved.sampling.choice_temperature
        sampling_temperature = resolved.sampling.temperature
        if strength is None:
            strength = 1.0 if mask is not None else 0.5
        advice = ("Lower the batch size or the image size (or use fp16/bf16 on a GPU)."
                  if batch_size > 1 else "Lower the image size (or use fp16/bf16 on a GPU).")
        with explain_out_of_memory(f"generating {batch_size} image(s) of {width}x{height} px", advice):
            positive = self.encode_prompts(prompts)
            negative = self.encode_prompts(negatives) if cfg != 1.0 else None
            self.release("text_encoder")
            cond = text_condition(positive, negative, width, height, batch_size)
            generators = make_generators(seed, batch_size)
            start_tokens = fixed = None
            start_step, smr = 0, 1
            if init_image is not None:
                encoded = encode_images(self.component("vq"), init_image)
                self.release("vq")
                encoded = encoded.expand(batch_size, *grid) if encoded.shape[0] == 1 else encoded
                if mask is not None:
                    if tuple(mask.shape[-2:]) != (height, width):
                        raise ValueError(f"inpaint mask is {mask.shape[-1]}x{mask.shape[-2]} px but the image is "
                                         f"{width}x{height}; give a mask of the image's size")
                    token_mask = mask_to_token_grid(mask, grid)
                    start_tokens, fixed, smr = start_for_inpaint(encoded, token_mask, self.mask_token_id)
                    if strength < 1.0:
                        start_step = img2img_start(steps, strength)
                else:
                    start_step = img2img_start(steps, strength, strength_mode)
                    start_tokens = noise_for_img2img(encoded, steps, start_step, schedule, self.mask_token_id,
                                                     generators, strength_mode)
            tokens = generate_tokens(
                self.component("transformer"), cond, sampler=sampler, steps=steps, cfg=cfg, grid=grid,
                tokens=start_tokens, fixed=fixed, start_step=start_step, starting_mask_ratio=smr, schedule=schedule,
                choice_temperature=choice_temperature, sampling_temperature=sampling_temperature,
                rule_options=rule_options, generators=generators, draw_on_device=draw_on_device, callback=callback)
            self.release("transformer")
            images = decode_tokens(self.component("vq"), tokens)
            self.release("vq")
        return GenerationResult(tokens=tokens, images=images, settings=dict(
            sampler=sampler, steps=steps, cfg=cfg, seed=seed, width=width, height=height, schedule=schedule,
            draw_on_device=draw_on_device), origin=resolved.origin)


def config_shells(root: Path) -> dict[str, Any]:
    """Weightless stand-ins built from the component configs alone (meta device; no weights read): the
    transformer and VQ modules, and the text encoder's two widths."""
    from types import SimpleNamespace

    from .checkpoints import build_on_meta, family_of_config, generator_builders
    from .models.vq import VQModel

    configs = {}
    for sub in ("transformer", "vqvae", "text_encoder"):
        if not (root / sub / "config.json").is_file():
            raise CheckpointError(f"{root / sub} has no config.json (needed to load the model sequentially)")
        configs[sub] = read_json(root / sub / "config.json")
    family = family_of_config(configs["transformer"]) or "amused"
    builders = generator_builders()
    if family not in builders:
        raise CheckpointError(f"{root / 'transformer'}: the {family} family is not available in this build")
    text = configs["text_encoder"]
    return {"transformer": build_on_meta(builders[family][0], configs["transformer"]),
            "vq": build_on_meta(VQModel, configs["vqvae"]),
            "text_encoder": SimpleNamespace(hidden_size=int(text["hidden_size"]),
                                            projection_dim=int(text.get("projection_dim", text["hidden_size"])))}


def _on_device(text: TextEncoder, device: torch.device) -> TextEncoder:
    text.model.to(device)
    return text


def check_compatible(transformer: nn.Module, vq: nn.Module, text: TextEncoder | None) -> None:
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

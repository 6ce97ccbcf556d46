"""How a run starts: text to image, image to image, inpaint, or a mask-free edit's region.

Each start is a small value object; :func:`prepare` turns it into the loop's :class:`LoopStart` (the token
map with its masked positions, the fixed positions, the first step, the schedule's share). The arithmetic
and random draws follow diffusers' aMUSEd pipelines (``AmusedImg2ImgPipeline``, ``AmusedInpaintPipeline``,
``AmusedScheduler.add_noise``), so the same seed gives the reference's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .images import mask_to_token_grid
from .sampling.loop import LoopStart
from .sampling.schedules import mask_ratio
from .settings import Sampling

STRENGTH_MODES = ("reference", "full")


@dataclass(frozen=True)
class EncodedImage:
    """A picture as the VQ encodes it: token ids ``[B or 1, h, w]`` and its pixel size."""

    tokens: torch.Tensor
    width: int
    height: int
    codebook_size: int | None = None    # the VQ's, to name a mismatch with the generator


@dataclass(frozen=True)
class TextToImage:
    width: int
    height: int


@dataclass(frozen=True)
class ImageToImage:
    """Re-mask part of a picture and regenerate it: ``strength`` = the share of the steps that run.
    ``mode="reference"`` keeps diffusers' quirk (strength 1.0 masks *nothing*); ``"full"`` masks everything."""

    image: EncodedImage
    strength: float = 0.5
    mode: str = "reference"


@dataclass(frozen=True)
class Inpaint:
    """Regenerate where ``mask`` is 1 (pixels ``[B or 1, H, W]`` of the picture's size, or tokens
    ``[B or 1, h, w]``); everything else is kept exactly. The reference inpaint pipeline uses the linear
    schedule (the default when the sampling settings name none) and strength 1.0."""

    image: EncodedImage
    mask: torch.Tensor
    strength: float = 1.0


@dataclass(frozen=True)
class Edit:
    """Regenerate a region ``[B or 1, h, w]`` (bool token grid) of a picture, keep the rest exactly."""

    image: EncodedImage
    region: torch.Tensor


Start = TextToImage | ImageToImage | Inpaint | Edit


def size_of(start: Start) -> tuple[int, int]:
    """(width, height) in px of what the run makes."""
    if isinstance(start, TextToImage):
        return start.width, start.height
    return start.image.width, start.image.height


def default_schedule(start: Start) -> str | None:
    """The schedule a start uses when neither the user nor the model names one (None: the model's)."""
    return "linear" if isinstance(start, (Inpaint, Edit)) else None


def batch_size(start: Start, requested: int) -> int:
    """Images a run makes: ``requested``, or as many as the start's picture holds (one picture serves any
    batch)."""
    if requested < 1:
        raise ValueError(f"batch size must be >= 1; got {requested}")
    if isinstance(start, TextToImage):
        return requested
    images = start.image.tokens.shape[0]
    if images > 1 and requested not in (1, images):
        raise ValueError(f"the start picture holds {images} images but the batch size is {requested}")
    return max(requested, images)


def token_grid(model: nn.Module, width: int, height: int, vq_factor: int) -> tuple[int, int]:
    """Token grid ``(h, w)`` for a pixel size, with clear errors for sizes the model cannot take."""
    multiple = vq_factor * getattr(model, "token_grid_multiple", 1)
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} px for this model "
                             f"({vq_factor} px per token × {multiple // vq_factor}); got {value!r}")
    grid = (height // vq_factor, width // vq_factor)
    check = getattr(model, "check_resolution", None)
    if check is not None:
        check(*grid)
    return grid


def img2img_start(steps: int, strength: float, mode: str = "reference") -> int:
    """First step index for img2img: ``steps - int(steps * strength)`` (``AmusedImg2ImgPipeline``)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1]; got {strength!r}")
    if mode not in STRENGTH_MODES:
        raise ValueError(f"strength mode must be 'reference' or 'full'; got {mode!r}")
    start = steps - int(steps * strength)
    if start >= steps:
        raise ValueError(f"strength {strength} runs no step out of {steps}; raise strength or steps")
    return start


def noise_for_img2img(tokens: torch.Tensor, sampling: Sampling, start: int, mask_id: int,
                      generators: list[torch.Generator], mode: str = "reference") -> torch.Tensor:
    """Mask each token with probability ``mask_ratio(start - 1)`` before the first executed step
    (``AmusedScheduler.add_noise`` with ``timesteps[start - 1]``; its ``torch.rand`` comes before the first
    multinomial draw).

    Quirk of the reference (``mode="reference"``): strength 1.0 gives ``start = 0`` and the index -1 wraps
    to the last step, whose ratio is ~0, so *nothing* is masked and the image is only re-decoded.
    ``mode="full"`` masks everything at strength 1.0 (a pure text-to-image run)."""
    if start == 0 and mode == "full":
        return torch.full_like(tokens, mask_id)
    ratio = mask_ratio(sampling.schedule, (start - 1) % sampling.steps, sampling.steps)
    noise = torch.cat([torch.rand((1, *tokens.shape[1:]), generator=g) for g in generators])
    return torch.where(noise.to(tokens.device) < ratio, mask_id, tokens)


def token_mask(start: Inpaint, grid: tuple[int, int]) -> torch.Tensor:
    """The inpaint mask on the token grid (pixels: resized and thresholded like the reference)."""
    mask = start.mask if start.mask.ndim == 3 else start.mask[None]
    if tuple(mask.shape[1:]) == grid:
        return mask.bool()
    if tuple(mask.shape[1:]) != (start.image.height, start.image.width):
        raise ValueError(f"inpaint mask is {mask.shape[2]}x{mask.shape[1]} px but the image is "
                         f"{start.image.width}x{start.image.height}; give a mask of the image's size")
    return mask_to_token_grid(mask, grid)


def masked_start(tokens: torch.Tensor, region: torch.Tensor, mask_id: int, what: str) -> LoopStart:
    """Tokens with ``region`` masked; the rest fixed; the schedule counts over the region (|R|/N)."""
    region = region.to(tokens.device).bool()
    if region.shape != tokens.shape:
        if region.shape[1:] != tokens.shape[1:] or region.shape[0] not in (1, tokens.shape[0]):
            raise ValueError(f"{what} covers a {tuple(region.shape[1:])} token grid but the image has "
                             f"{tuple(tokens.shape[1:])}; give one of the image's size")
        region = region.expand_as(tokens)
    if not region.any():
        raise ValueError(f"{what} is empty: nothing to regenerate (1 / white marks the area to repaint; in "
                         "ComfyUI paint it with Open in MaskEditor)")
    ratio = region.reshape(region.shape[0], -1).float().mean(dim=1, keepdim=True)
    return LoopStart(tokens=torch.where(region, mask_id, tokens), fixed=~region, starting_mask_ratio=ratio.cpu())


def prepare(start: Start, model: nn.Module, vq_factor: int, sampling: Sampling, batch: int,
            generators: list[torch.Generator]) -> LoopStart:
    """The loop's start for ``batch`` images (``sampling`` complete; ``generators`` fresh: img2img's
    masking noise is the first draw of each)."""
    width, height = size_of(start)
    grid = token_grid(model, width, height, vq_factor)
    mask_id = model.mask_token_id
    if isinstance(start, TextToImage):
        return LoopStart(tokens=torch.full((batch, *grid), mask_id, dtype=torch.long))
    image = start.image
    if image.codebook_size is not None and image.codebook_size != model.codebook_size:
        raise ValueError(f"the picture was encoded by a {image.codebook_size}-code VQ but the model predicts "
                         f"{model.codebook_size} codes; encode it with this model's VQ")
    if tuple(image.tokens.shape[1:]) != grid:
        raise ValueError(f"the picture's tokens form a {tuple(image.tokens.shape[1:])} grid but {width}x{height} "
                         f"px is {grid} for this model")
    tokens = image.tokens.to(torch.long).cpu().expand(batch, *grid)
    if isinstance(start, ImageToImage):
        first = img2img_start(sampling.steps, start.strength, start.mode)
        noised = noise_for_img2img(tokens, sampling, first, mask_id, generators, start.mode)
        return LoopStart(tokens=noised, start_step=first)
    if isinstance(start, Inpaint):
        if not 0 < start.strength <= 1:
            raise ValueError(f"strength must be in (0, 1]; got {start.strength!r}")
        loop_start = masked_start(tokens, token_mask(start, grid), mask_id, "inpaint mask")
        if start.strength < 1.0:
            loop_start.start_step = img2img_start(sampling.steps, start.strength)
        return loop_start
    return masked_start(tokens, start.region, mask_id, "edit region")

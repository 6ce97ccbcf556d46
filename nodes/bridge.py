"""The glue between the engine and ComfyUI: model management, devices, progress, previews, interrupts.

Models are wrapped in ``comfy.model_patcher.ModelPatcher`` and loaded with
``comfy.model_management.load_models_gpu`` before use, so ComfyUI offloads and frees them like its own.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import torch
from PIL import Image

from ..tcts.sampling import StepReport


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def generator_dtype(model: torch.nn.Module, requested: str = "auto") -> torch.dtype:
    """fp32 on CPU; on GPU what ComfyUI picks for diffusion models (bf16/fp16), unless requested."""
    named = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if requested in named:
        return named[requested]
    device = mm.get_torch_device()
    return mm.unet_dtype(device, parameter_count(model), [torch.bfloat16, torch.float16, torch.float32])


def wrap_generator(model: torch.nn.Module, dtype: torch.dtype) -> comfy.model_patcher.ModelPatcher:
    model = model.to(dtype=dtype, device=mm.unet_offload_device()).eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def wrap_vq(model: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """The VQ stays fp32: the reference decoder produces NaN in fp16."""
    model = model.float().to(mm.vae_offload_device()).eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.vae_device(),
                                            offload_device=mm.vae_offload_device())


def load_for_use(*patchers: comfy.model_patcher.ModelPatcher) -> None:
    """Ask ComfyUI's model manager to place the models on their compute device."""
    mm.load_models_gpu(list(patchers))


class OutOfMemory(RuntimeError):
    """Sampling or decoding ran out of memory; the models were unloaded so ComfyUI stays usable."""


@contextlib.contextmanager
def unload_on_oom(what: str, advice: str) -> Iterator[None]:
    """Turn an out-of-memory error into a clear message after freeing every loaded model."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        mm.unload_all_models()
        mm.soft_empty_cache(True)
        raise OutOfMemory(f"out of memory while {what}; all models were unloaded. {advice} ({exc})") from exc


def to_output(t: torch.Tensor) -> torch.Tensor:
    return t.to(mm.intermediate_device())


def codebook_palette(vq: torch.nn.Module) -> torch.Tensor:
    """[K, 3] uint8 preview colours: the codebook's first 3 principal components, so similar codes get
    similar colours (cheap previews without running the VQ decoder)."""
    codes = vq.quantize.embedding.weight.detach().float().cpu()
    centred = codes - codes.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    rgb = centred @ v[:3].T
    lo, hi = rgb.min(0).values, rgb.max(0).values
    return ((rgb - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8)


def colour_preview(tokens: torch.Tensor, palette: torch.Tensor, mask_id: int) -> Image.Image:
    """First image of the batch as a token-colour map; masked tokens grey."""
    grid = tokens[0].cpu()
    masked = grid == mask_id
    rgb = palette[grid.clamp(max=palette.shape[0] - 1)]
    rgb[masked] = 128
    return Image.fromarray(rgb.numpy(), mode="RGB")


def fallback_palette(codebook_size: int) -> torch.Tensor:
    """Deterministic colours per code when no VQ is at hand."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (codebook_size, 3), generator=g, dtype=torch.uint8)


def progress_callback(steps: int, preview: str, mask_id: int, palette: torch.Tensor | None,
                      decode: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[StepReport], None]:
    """Per step: raise if the user pressed Cancel, advance ComfyUI's progress bar, send a preview.

    ``preview``: "colours" (token-colour map, cheap), "decode" (the VQ decodes the kept tokens every
    step; masked tokens are shown as code 0), or "none".
    """
    bar = comfy.utils.ProgressBar(steps)

    def callback(report: StepReport) -> None:
        mm.throw_exception_if_processing_interrupted()
        image = None
        if preview == "colours" and palette is not None:
            image = colour_preview(report.tokens, palette, mask_id)
        elif preview == "decode" and decode is not None:
            visible = torch.where(report.masked, 0, report.tokens)[:1]
            pixels = decode(visible)[0]
            image = Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().cpu().numpy())
        bar.update_absolute(report.step + 1, report.steps, ("JPEG", image, 512) if image is not None else None)

    return callback

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

from ..tcts.errors import OutOfMemory, is_out_of_memory
from ..tcts.preview import CodeColours, code_colours, colour_preview
from ..tcts.sampling.loop import StepReport


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
    """Ask ComfyUI's model manager to place the models on their compute device.

    Whole: our modules are plain ``torch.nn`` layers, not ``comfy.ops`` ones, and the model manager can
    only stream or partly offload the latter; in low-VRAM mode a partial load would leave one module's
    weights split across devices."""
    mm.load_models_gpu(list(patchers), force_full_load=True)


@contextlib.contextmanager
def unload_on_oom(what: str, advice: str) -> Iterator[None]:
    """Turn an out-of-memory error (GPU or CPU) into a clear message after freeing every loaded model, so
    ComfyUI stays usable."""
    try:
        yield
    except BaseException as exc:
        if not is_out_of_memory(exc):
            raise
        mm.unload_all_models()
        mm.soft_empty_cache(True)
        raise OutOfMemory(f"out of memory while {what}; all models were unloaded. {advice} "
                          f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None


def to_output(t: torch.Tensor) -> torch.Tensor:
    return t.to(mm.intermediate_device())


def progress_preview(tokens: torch.Tensor, mask_id: int, colours: CodeColours | None, scale: int) -> Image.Image:
    """The first image's tokens in the colours they decode to; without a VQ at hand, a map of what is
    decided (light) and still masked (dark)."""
    if colours is not None:
        return colour_preview(tokens, colours, mask_id, scale)
    grid = torch.where(tokens[0].cpu() == mask_id, 64, 200).to(torch.uint8)
    image = Image.fromarray(grid.numpy(), mode="L").convert("RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def progress_callback(steps: int, preview: str, mask_id: int, vq: torch.nn.Module | None, vq_factor: int,
                      decode: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[StepReport], None]:
    """Per step: raise if the user pressed Cancel, advance ComfyUI's progress bar, send a preview.

    ``preview``: "colours" (each kept token in the colour its code decodes to, masked tokens grey; cheap,
    see ``tcts.preview``), "decode" (the VQ decodes the kept tokens every step; masked tokens are shown as
    code 0), or "none".
    """
    bar = comfy.utils.ProgressBar(steps)
    colours = code_colours(vq) if preview == "colours" and vq is not None else None

    def callback(report: StepReport) -> None:
        mm.throw_exception_if_processing_interrupted()
        image = None
        if preview == "colours":
            image = progress_preview(report.tokens, mask_id, colours, vq_factor)
        elif preview == "decode" and decode is not None:
            visible = torch.where(report.masked, 0, report.tokens)[:1]
            pixels = decode(visible)[0]
            image = Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().cpu().numpy())
        bar.update_absolute(report.step + 1, report.steps, ("JPEG", image, 512) if image is not None else None)

    return callback

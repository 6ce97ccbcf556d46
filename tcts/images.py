"""Pixel-side helpers: image/mask conversion between files, ComfyUI tensors and the token grid.

Images are float ``[B, H, W, 3]`` in ``[0, 1]`` (ComfyUI's IMAGE layout); the VQ reads ``[B, 3, H, W]``
in ``[0, 1]`` with no normalisation (diffusers ``pipeline_amused.py``: ``do_normalize=False``).
Masks are float ``[B, H, W]`` in ``[0, 1]``, 1 = regenerate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image(path: str | Path) -> torch.Tensor:
    """An RGB image file as ``[1, H, W, 3]`` float in [0, 1]. Alpha is dropped (RGB is used as is)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from exc
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def load_mask(path: str | Path) -> torch.Tensor:
    """A mask image as ``[1, H, W]`` float in [0, 1] (luminance; white = regenerate)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask {path} does not exist")
    with Image.open(path) as img:
        grey = img.convert("L")
    return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write one ``[H, W, 3]`` image as PNG atomically (no half-written file on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_image_batch(images: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Validate an IMAGE tensor ``[B, H, W, C]``; an alpha channel is dropped."""
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must be [B, H, W, 3] (RGB, values 0..1); got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} batch is empty")
    return images[..., :3]


def mask_to_token_grid(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pixel mask ``[B, H, W]`` (or ``[H, W]``) -> bool token mask ``[B, h, w]``.

    Like the reference inpaint pipeline's mask processor (diffusers ``image_processor.py``
    VaeImageProcessor with ``do_resize``/``do_binarize``): resize to the token grid with Lanczos, then
    threshold at 0.5, so a 16-px-aligned mask maps to exactly its tokens.
    """
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] == 0:
        raise ValueError(f"mask must be [B, H, W] (values 0..1, 1 = regenerate); got shape {tuple(mask.shape)}")
    h, w = grid
    out = []
    for m in mask.float().clamp(0, 1).cpu():
        img = Image.fromarray((m.numpy() * 255.0).round().astype(np.uint8), mode="L")
        small = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(small >= 0.5))
    return torch.stack(out)


def token_mask_to_pixels(token_mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Bool/float token mask ``[B, h, w]`` -> float pixel mask ``[B, h*factor, w*factor]`` (nearest)."""
    return token_mask.float().repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)

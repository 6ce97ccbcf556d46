"""Cheap live previews of a token grid: every code shown as the colour it decodes to.

Like the latent previews ComfyUI shows for diffusion models, a preview should look like the picture
being made, without running the VQ decoder on the whole grid every step. Each code's colour is the mean
of the centre patch when the VQ decodes a small grid filled with that code alone (the centre of a 3 x 3
grid: a 1 x 1 grid is all border, and the decoder's padding washes its colours out). Colours are
decoded lazily, only for codes that appear, and cached per VQ, so a run pays for the few hundred codes
it uses once, and later runs with the same VQ pay nothing.
"""
from __future__ import annotations

import threading
import weakref

import torch
from PIL import Image
from torch import nn

#: side of the uniform grid decoded per code; its centre token's patch gives the colour
CONTEXT = 3
#: codes decoded per batch
CHUNK = 64
MASKED_GREY = 128


class CodeColours:
    """Mean RGB colour (uint8) of each code of a VQ, decoded on first use."""

    def __init__(self, vq: nn.Module) -> None:
        self._vq = weakref.ref(vq)
        size = int(vq.codebook_size)
        self.colours = torch.zeros(size, 3, dtype=torch.uint8)
        self.known = torch.zeros(size, dtype=torch.bool)
        self._lock = threading.Lock()

    @torch.inference_mode()
    def _decode(self, codes: torch.Tensor) -> None:
        vq = self._vq()
        if vq is None:
            raise RuntimeError("the VQ of this colour table was freed")
        parameter = next(vq.parameters())
        factor = int(vq.downscale_factor)
        centre = (CONTEXT // 2) * factor
        for chunk in codes.split(CHUNK):
            ids = chunk.view(-1, 1, 1).expand(-1, CONTEXT, CONTEXT).to(parameter.device)
            pixels = vq.decode_ids(ids).clamp(0, 1)[:, :, centre:centre + factor, centre:centre + factor]
            self.colours[chunk] = (pixels.float().mean((2, 3)) * 255).round().to(torch.uint8).cpu()
            self.known[chunk] = True

    def lookup(self, tokens: torch.Tensor, mask_id: int) -> torch.Tensor:
        """``[..., 3]`` uint8 colours of ``tokens`` (any shape); the mask id (and anything out of the
        codebook) is grey."""
        tokens = tokens.detach().cpu().long()
        valid = (tokens >= 0) & (tokens < self.colours.shape[0]) & (tokens != mask_id)
        with self._lock:
            needed = tokens[valid].unique()
            missing = needed[~self.known[needed]]
            if missing.numel():
                self._decode(missing)
        rgb = self.colours[tokens.clamp(0, self.colours.shape[0] - 1)]
        rgb[~valid] = MASKED_GREY
        return rgb


_TABLES: "weakref.WeakKeyDictionary[nn.Module, CodeColours]" = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def code_colours(vq: nn.Module) -> CodeColours:
    """The colour table of ``vq`` (one per VQ module, kept while the module lives)."""
    with _TABLES_LOCK:
        table = _TABLES.get(vq)
        if table is None:
            table = _TABLES[vq] = CodeColours(vq)
        return table


def colour_preview(tokens: torch.Tensor, colours: CodeColours, mask_id: int, scale: int = 1) -> Image.Image:
    """The first image of a ``[B, h, w]`` batch as a picture of code colours, each token ``scale`` px wide."""
    rgb = colours.lookup(tokens[0], mask_id)
    image = Image.fromarray(rgb.numpy(), mode="RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image

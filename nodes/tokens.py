"""VQ Encode (IMAGE -> tokens) and VQ Decode (tokens -> IMAGE)."""
from __future__ import annotations

from .api import io

from ..tcts.pipeline import decode_tokens, encode_images
from . import bridge
from .types import TOKENS_CATEGORY, TokenGrid, TokensType, VQBundle, VQType


def check_codebook(grid: TokenGrid, vq: VQBundle) -> None:
    if grid.codebook_size != vq.model.codebook_size:
        raise ValueError(f"tokens come from a {grid.codebook_size}-code model but this VQ has "
                         f"{vq.model.codebook_size} codes; use the VQ of the same model")


class VQDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSVQDecode", display_name="VQ Decode (tokens to image)", category=TOKENS_CATEGORY,
            description="Decodes a token grid to an IMAGE (values 0..1) with the VQ-GAN.",
            inputs=[VQType.Input("vq"), TokensType.Input("tokens")],
            outputs=[io.Image.Output(display_name="image")])

    @classmethod
    def execute(cls, vq: VQBundle, tokens: TokenGrid) -> io.NodeOutput:
        check_codebook(tokens, vq)
        mask_id = tokens.extras.get("mask_id")
        if mask_id is not None and (tokens.tokens == mask_id).any():
            raise ValueError("tokens still contain masked positions; decode the output of a sampler")
        bridge.load_for_use(vq.patcher)
        with bridge.unload_on_oom(f"decoding {tokens.tokens.shape[0]} image(s)", "Decode a smaller batch."):
            images = decode_tokens(vq.model, tokens.tokens)
        return io.NodeOutput(bridge.to_output(images))


class VQEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSVQEncode", display_name="VQ Encode (image to tokens)", category=TOKENS_CATEGORY,
            description="Encodes an IMAGE to a token grid (one token per 16x16 pixels) for img2img, inpainting "
                        "and editing. Width and height must be multiples of 16 (scale or crop first).",
            inputs=[VQType.Input("vq"), io.Image.Input("image")],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, vq: VQBundle, image) -> io.NodeOutput:
        factor = int(vq.model.downscale_factor)
        if image.ndim != 4 or image.shape[1] % factor or image.shape[2] % factor:
            raise ValueError(f"image must be [B, H, W, 3] with H and W multiples of {factor}; got "
                             f"{tuple(image.shape)} (use Upscale Image or ImageCrop to fit)")
        bridge.load_for_use(vq.patcher)
        ids = encode_images(vq.model, image)
        grid = TokenGrid(tokens=bridge.to_output(ids), codebook_size=int(vq.model.codebook_size),
                         width=int(image.shape[2]), height=int(image.shape[1]))
        return io.NodeOutput(grid)


NODES = [VQDecode, VQEncode]

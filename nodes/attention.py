"""Attention maps of a generation: a word's cross-attention and the FAS low-frequency group.

The node re-runs the generator once on the finished tokens with the prompt (conditional pass only) and
captures the attention of that forward. That needs only model + conditioning + tokens, so it works on any
token grid — the output of any sampler, a VQ-encoded photo, an edit — and costs one forward, instead of
carrying per-step maps through the graph.
"""
from __future__ import annotations

import torch
from .api import io

from ..tcts.attention import attention_maps, overlay, to_pixels, word_columns
from ..tcts.engine import condition
from ..tcts.sampling.fas_options import FASOptions
from ..tcts.starts import TextToImage
from . import bridge
from .conditioning import text_condition_from_comfy
from .options import option_inputs, option_values
from .types import EDITING_CATEGORY, GeneratorBundle, ModelType, TokenGrid, TokensType


def check_tokens(tokens: TokenGrid, model: GeneratorBundle) -> torch.Tensor:
    generator = model.model
    if tokens.codebook_size != generator.codebook_size:
        raise ValueError(f"tokens come from a {tokens.codebook_size}-code model but this model predicts "
                         f"{generator.codebook_size} codes")
    grid = tokens.tokens.long()
    if ((grid < 0) | (grid >= generator.codebook_size)).any():
        raise ValueError("tokens contain masked or out-of-range positions; use a finished token grid (a sampler's "
                         "output or VQ Encode)")
    return grid


def prompt_pieces_from_comfy(conditioning: list, what: str) -> tuple[list[str], str | None]:
    """(BPE pieces, text) of the prompt of a conditioning made by Masked Generative Text Encode."""
    extra = conditioning[0][1] if conditioning else {}
    pieces = extra.get("tcts_token_pieces")
    if not pieces:
        raise ValueError(f"the {what} conditioning does not record its prompt's tokens: encode it with Masked "
                         "Generative Text Encode (not CLIP Text Encode) to look up a word")
    texts = extra.get("tcts_text") or [None]
    return list(pieces[0]), texts[0]


def word_columns_from_comfy(conditioning: list, word: str, what: str) -> list[int]:
    """The columns of ``word`` in a conditioning made by Masked Generative Text Encode."""
    return word_columns(word, *prompt_pieces_from_comfy(conditioning, what))


class TCTSAttentionMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSAttentionMaps", display_name="Attention Maps (word / FAS low frequency)",
            category=EDITING_CATEGORY,
            description="Runs the generator once on finished tokens with the prompt and returns the cross-attention "
                        "map of a word of the prompt (all its BPE pieces) and the FAS low-frequency group, as masks "
                        "(image size) and heat-map overlays.",
            inputs=[
                ModelType.Input("model"),
                io.Conditioning.Input("positive", tooltip="the prompt, from Masked Generative Text Encode"),
                TokensType.Input("tokens", tooltip="a finished token grid (sampler output or VQ Encode)"),
                io.String.Input("word", default="",
                                tooltip="a word or phrase of the prompt (empty: no word map)"),
                *option_inputs(FASOptions, only=("statistic", "q", "cutoff", "smooth")),
                *option_inputs(FASOptions, only=("layers",), rename={"layers": "self_layers"}),
                io.String.Input("cross_layers", default="", tooltip="word-map layers (empty: all)"),
                io.Image.Input("image", optional=True,
                               tooltip="the decoded image to draw the heat maps over (same size as the tokens)"),
            ],
            outputs=[io.Mask.Output(display_name="word_mask"), io.Image.Output(display_name="word_overlay"),
                     io.Mask.Output(display_name="low_freq_mask"), io.Image.Output(display_name="low_freq_overlay")])

    @classmethod
    def execute(cls, model: GeneratorBundle, positive, tokens: TokenGrid, word: str, statistic: str, q: float,
                cutoff: float, smooth: bool, self_layers: str, cross_layers: str,
                image: torch.Tensor | None = None) -> io.NodeOutput:
        generator = model.model
        grid = check_tokens(tokens, model)
        b = grid.shape[0]
        pos = text_condition_from_comfy(positive, "positive", generator.text_hidden_size, generator.pooled_size)
        columns = word_columns_from_comfy(positive, word, "positive") if word.strip() else None
        size = (tokens.height, tokens.width)
        if image is not None and tuple(image.shape[1:3]) != size:
            raise ValueError(f"image is {image.shape[2]}x{image.shape[1]} px but the tokens decode to "
                             f"{size[1]}x{size[0]} px")
        cond = condition(pos, None, TextToImage(tokens.width, tokens.height), b)
        fas = option_values(FASOptions, {"statistic": statistic, "q": q, "cutoff": cutoff, "smooth": smooth,
                                         "layers": self_layers})
        bridge.load_for_use(model.patcher)
        device = next(generator.parameters()).device
        maps = attention_maps(generator, grid.to(device), cond, columns=columns, fas=fas,
                              cross_layers=cross_layers.strip() or None)
        background = None if image is None else image.cpu()
        word_map = maps.word.cpu() if maps.word is not None else torch.zeros(b, *grid.shape[1:])
        low = maps.low_frequency.float().cpu()
        outputs = (to_pixels(word_map, size), overlay(word_map, size, background),
                   to_pixels(low, size), overlay(low, size, background))
        return io.NodeOutput(*(bridge.to_output(t) for t in outputs))


NODES = [TCTSAttentionMaps]

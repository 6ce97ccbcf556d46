"""Reading ComfyUI CONDITIONING for the masked generators, and our text-encode node."""
from __future__ import annotations

import torch
from .api import io

from ..tcts.text import MAX_TOKENS, TextCondition
from .types import CONDITIONING_CATEGORY


def text_condition_from_comfy(conditioning: list, what: str, hidden_size: int, pooled_size: int) -> TextCondition:
    """``[[cond [B, T, D], {"pooled_output": [B, P], …}], …]`` -> TextCondition.

    Only the first entry is used (area/timestep-range conditioning has no meaning for these models), and
    only the first 77-token chunk of long prompts: the reference truncates prompts to 77 tokens.
    """
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{what} conditioning is empty; connect a CLIP Text Encode output")
    cond, extra = conditioning[0][0], conditioning[0][1]
    pooled = extra.get("pooled_output")
    if pooled is None:
        raise ValueError(f"{what} conditioning has no pooled_output; encode it with a CLIP from a tcts loader "
                         "(Load Masked Generative Model / Text Encoder)")
    if cond.shape[-1] != hidden_size or pooled.shape[-1] != pooled_size:
        raise ValueError(f"{what} conditioning is {cond.shape[-1]} wide with a {pooled.shape[-1]}-wide pooled "
                         f"vector, but the model expects {hidden_size} and {pooled_size}: was it encoded with "
                         "this model's text encoder?")
    ids = extra.get("tcts_token_ids")
    return TextCondition(hidden_states=cond[:, :MAX_TOKENS].float(), pooled=pooled.float(),
                         token_ids=ids if ids is not None else torch.zeros(cond.shape[0], 0, dtype=torch.long),
                         texts=list(extra.get("tcts_text", [])))


def token_piece_strings(clip, chunk: list) -> list[str]:
    """BPE piece strings of a token chunk (``"cat</w>"``; ``""`` for embeddings), via the tokenizer's
    ``untokenize``: the attention-map and edit nodes find a word's columns from them."""
    pieces = []
    for t in chunk:
        token = t[0] if isinstance(t, (tuple, list)) else t
        try:
            pieces.append(str(clip.tokenizer.untokenize([(int(token), 1.0)])[0][1]))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            pieces.append("")
    return pieces


def encode_with_ids(clip, text: str) -> list:
    """Encode like CLIPTextEncode, and also record the prompt, its token ids and BPE pieces (first chunk)."""
    tokens = clip.tokenize(text)
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    chunk = next(iter(tokens.values()))[0]
    ids = torch.tensor([[t[0] if isinstance(t, (tuple, list)) else t for t in chunk]], dtype=torch.long)
    pieces = [token_piece_strings(clip, chunk)]
    return [[c, {**d, "tcts_text": [text], "tcts_token_ids": ids, "tcts_token_pieces": pieces}]
            for c, d in conditioning]


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSTextEncode", display_name="Masked Generative Text Encode", category=CONDITIONING_CATEGORY,
            description="Encodes a prompt and a negative prompt. Works like CLIP Text Encode, and also records the "
                        "prompt text and its token ids so attention-map and edit nodes can find a word.",
            inputs=[io.Clip.Input("clip"),
                    io.String.Input("prompt", multiline=True, default=""),
                    io.String.Input("negative", multiline=True, default="",
                                    tooltip='the reference encodes "" as the negative prompt')],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")])

    @classmethod
    def execute(cls, clip, prompt: str, negative: str) -> io.NodeOutput:
        if clip is None:
            raise ValueError("clip input is missing: connect a CLIP from a tcts loader")
        return io.NodeOutput(encode_with_ids(clip, prompt), encode_with_ids(clip, negative))


NODES = [TextEncode]

"""Mask-free Edit: change the object named by a word, keep every other token exactly (docs/method.md, Mask-free
editing)."""
from __future__ import annotations

from .api import io

from ..tcts.attention import to_pixels
from ..tcts.editing import (SELECTIONS, STRATEGIES, THRESHOLDS, EditRequest, RegionOptions, mask_free_edit,
                            region_columns, resolve_strategy)
from ..tcts.engine import Job, condition
from ..tcts.pipeline import decode_tokens
from ..tcts.sampling.registry import RULES, RuleOptions, make_rule
from ..tcts.sampling.schedules import SCHEDULES
from ..tcts.settings import Sampling
from ..tcts.starts import EncodedImage, TextToImage
from . import bridge
from .attention import check_tokens, prompt_pieces_from_comfy
from .conditioning import text_condition_from_comfy
from .samplers import PREVIEWS
from .selector import SelectorBundle, SelectorType, selector_rule_options
from .types import EDITING_CATEGORY, GeneratorBundle, ModelType, TokenGrid, TokensType


class TCTSMaskFreeEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSMaskFreeEdit", display_name="Mask-free Edit", category=EDITING_CATEGORY,
            description="Edits an image without a hand-drawn mask: the region is where the target prompt makes "
                        "the generator expect other tokens than the source prompt (select = contrast), or the "
                        "cross-attention of the object a word of the source prompt names (an adjective or a phrase "
                        "reads its noun); tokens outside it stay exactly the source tokens, tokens inside are "
                        "regenerated with the target prompt (TCTS when a selector is connected, else "
                        "random-revoke). The region output is the mask of what was regenerated.",
            inputs=[
                ModelType.Input("model"),
                TokensType.Input("source_tokens", tooltip="the image to edit: VQ Encode output or a sampler output"),
                io.Conditioning.Input("source", tooltip="a prompt describing the source image (Masked Generative "
                                                        "Text Encode: the word is looked up in it)"),
                io.Conditioning.Input("target", tooltip="the prompt of the edited image"),
                io.Conditioning.Input("negative", tooltip="negative prompt for classifier-free guidance"),
                io.String.Input("word", default="", tooltip="a word (or phrase) of the source prompt naming the object "
                                                            "to change: its noun, an adjective or the whole phrase"),
                io.Combo.Input("strategy", options=list(STRATEGIES), default="auto",
                               tooltip="sampler inside the region; auto = tcts with a selector, else random-revoke"),
                io.Int.Input("steps", default=12, min=1, max=200),
                io.Float.Input("cfg", default=10.0, min=0.0, max=50.0, step=0.1),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="linear",
                               tooltip="mask schedule over the region (linear, like the reference inpaint)"),
                io.Float.Input("choice_temperature", default=2.0, min=0.0, max=20.0, step=0.1),
                io.Float.Input("temperature", default=1.0, min=0.01, max=10.0, step=0.01),
                io.Combo.Input("threshold", options=list(THRESHOLDS), default="mean_std",
                               tooltip="mean_std: map > mean + k·std; top_q: the strongest top_q fraction"),
                io.Float.Input("k", default=0.0, min=-10.0, max=10.0, step=0.1),
                io.Float.Input("top_q", default=0.2, min=0.01, max=1.0, step=0.01),
                io.Boolean.Input("blur", default=True, tooltip="3x3 blur of the normalised map before thresholding"),
                io.Int.Input("dilate", default=0, min=0, max=16, tooltip="grow the region by this many tokens"),
                io.String.Input("region_layers", default="", tooltip="cross-attention layers (empty: all)"),
                io.Combo.Input("preview", options=PREVIEWS, default="colours"),
                io.Combo.Input("select", options=list(SELECTIONS), default="contrast",
                               tooltip="what the region follows: contrast = where the target prompt expects other "
                                       "tokens (any word of the object); object = the attention of the noun the word "
                                       "describes; object+word = both; word = the word's own attention"),
                io.Int.Input("contrast_samples", default=8, min=1, max=64,
                             tooltip="contrast: masked forwards per prompt (more: a steadier region)"),
                SelectorType.Input("selector", optional=True, tooltip="Load Token Selector: TCTS inside the region"),
            ],
            outputs=[TokensType.Output(display_name="tokens"), io.Mask.Output(display_name="region")])

    @classmethod
    def execute(cls, model: GeneratorBundle, source_tokens: TokenGrid, source, target, negative, word: str,
                strategy: str, steps: int, cfg: float, seed: int, schedule: str, choice_temperature: float,
                temperature: float, threshold: str, k: float, top_q: float, blur: bool, dilate: int,
                region_layers: str, preview: str = "colours", select: str = "contrast", contrast_samples: int = 8,
                selector: SelectorBundle | None = None) -> io.NodeOutput:
        generator = model.model
        grid = check_tokens(source_tokens, model)
        b = grid.shape[0]
        width, height = source_tokens.width, source_tokens.height
        hidden, pooled = generator.text_hidden_size, generator.pooled_size
        src = text_condition_from_comfy(source, "source", hidden, pooled)
        tgt = text_condition_from_comfy(target, "target", hidden, pooled)
        neg = text_condition_from_comfy(negative, "negative", hidden, pooled) if cfg != 1.0 else None
        if not word.strip():
            raise ValueError("word is empty: name the word of the source prompt whose object to change")
        pieces, text = prompt_pieces_from_comfy(source, "source")
        columns = region_columns(word, pieces, text, select)
        strategy = resolve_strategy(strategy, selector is not None)
        patchers = [model.patcher]
        options = RuleOptions()
        if selector is not None and RULES[strategy].needs_selector:
            options = selector_rule_options(selector, model, {})
            patchers.append(selector.patcher)
        image = EncodedImage(tokens=grid, width=width, height=height, codebook_size=source_tokens.codebook_size)
        placeholder = TextToImage(width, height)  # micro-conditions: the picture's size
        request = EditRequest(source=image, source_condition=condition(src, None, placeholder, b), columns=columns,
                              region=RegionOptions(select=select, threshold=threshold, k=k, top_q=top_q, blur=blur,
                                                   dilate=dilate, layers=region_layers.strip() or None,
                                                   samples=contrast_samples))
        sampling = Sampling(steps=steps, cfg=cfg, schedule=schedule, choice_temperature=(choice_temperature, 0.0),
                            temperature=temperature, draw_on_device=False)
        if preview == "decode" and model.vq is not None:
            patchers.append(model.vq.patcher)
        bridge.load_for_use(*patchers)
        decode = (lambda t: decode_tokens(model.vq.model, t)) if model.vq is not None else None
        mask_id = generator.mask_token_id
        callback = bridge.progress_callback(steps, preview, mask_id, model.vq.model if model.vq is not None else None,
                                            model.vq_factor, decode)
        target_job = Job(condition=condition(tgt, neg, placeholder, b), sampling=sampling,
                         rule=make_rule(strategy, options), seed=seed, callback=callback)
        result = mask_free_edit(generator, request, target_job, model.vq_factor)
        tokens = TokenGrid(tokens=bridge.to_output(result.tokens), codebook_size=int(generator.codebook_size),
                           width=width, height=height, family=model.family,
                           extras={"mask_id": mask_id, "sampler": f"edit/{strategy}", "seed": seed})
        mask = to_pixels(result.region.float().cpu(), (height, width))
        return io.NodeOutput(tokens, bridge.to_output(mask))


NODES = [TCTSMaskFreeEdit]

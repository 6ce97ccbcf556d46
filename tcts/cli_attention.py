"""Command-line parts of attention maps and mask-free editing.

* ``generate --attention-out maps.png [--attention-word WORD]``: after generating, re-run the generator
  once on the final tokens with the prompt and write ``maps-word.png`` (heat-map overlay of the word's
  cross-attention), ``maps-word-mask.png`` (grey map), ``maps-lowfreq.png`` / ``maps-lowfreq-mask.png``
  (the FAS LOW-frequency group) (:func:`add_attention_arguments`, :func:`write_generation_maps`);
* ``python -m tcts edit ...``: mask-free editing (:func:`add_edit_parser`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch


# --------------------------------------------------------------------------------------------------
# attention maps of a generation
# --------------------------------------------------------------------------------------------------

def add_attention_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attention maps (re-run the generator once on the final tokens)")
    g.add_argument("--attention-out", type=Path, default=None,
                   help="write attention maps beside this PNG name: <stem>-word.png, <stem>-word-mask.png "
                        "(with --attention-word), <stem>-lowfreq.png, <stem>-lowfreq-mask.png")
    g.add_argument("--attention-word", default=None,
                   help="a word (or phrase) of the prompt whose cross-attention map to write")


def check_attention_args(args: argparse.Namespace, pipe: Any) -> None:
    """Fail before generating: output name and folder, and the word must be in the prompt."""
    from .attention import token_pieces, word_columns

    out, word = args.attention_out, args.attention_word
    if out is None:
        if word:
            raise ValueError("--attention-word needs --attention-out (where to write the maps)")
        return
    if out.suffix.lower() not in ("", ".png"):
        raise ValueError(f"--attention-out must be a .png name; got {out}")
    if not out.parent.exists():
        raise ValueError(f"output folder {out.parent} does not exist")
    if word:
        ids = pipe.text_encoder.tokenize([args.prompt])[0]
        word_columns(word, token_pieces(pipe.text_encoder.tokenizer, ids), args.prompt)


def map_paths(out: Path, batch: int, index: int, what: str) -> Path:
    stem = out.stem if batch == 1 else f"{out.stem}-{index}"
    return out.with_name(f"{stem}-{what}.png")


def write_generation_maps(pipe: Any, prompts: list[str], result: Any, out: Path, word: str | None) -> list[Path]:
    """Compute and write the word and FAS low-frequency maps of a finished generation."""
    from .attention import attention_maps, overlay, to_pixels, token_pieces, word_columns
    from .engine import condition
    from .images import save_image
    from .starts import TextToImage

    tokens = result.tokens
    b = tokens.shape[0]
    width, height = int(result.settings["width"]), int(result.settings["height"])
    positive = pipe.encode_prompts(prompts)
    cond = condition(positive, None, TextToImage(width, height), b)
    columns = None
    if word:
        ids = positive.token_ids
        columns = [word_columns(word, token_pieces(pipe.text_encoder.tokenizer, ids[min(i, ids.shape[0] - 1)]),
                                prompts[min(i, len(prompts) - 1)]) for i in range(b)]
    maps = attention_maps(pipe.transformer, tokens, cond, columns=columns)
    size = (height, width)
    images = result.images
    written = []
    for i in range(b):
        items = [("lowfreq", maps.low_frequency[i:i + 1].float())]
        if maps.word is not None:
            items.insert(0, ("word", maps.word[i:i + 1]))
        for what, values in items:
            path = map_paths(out, b, i, what)
            save_image(overlay(values.cpu(), size, images[i:i + 1].cpu())[0], path)
            grey = to_pixels(values.cpu(), size)[0, ..., None].expand(-1, -1, 3)
            mask_path = map_paths(out, b, i, f"{what}-mask")
            save_image(grey, mask_path)
            written += [path, mask_path]
    return written


# --------------------------------------------------------------------------------------------------
# python -m tcts edit
# --------------------------------------------------------------------------------------------------

def add_edit_parser(sub: argparse._SubParsersAction) -> None:
    from .cli_common import DTYPES
    from .cli_rules import add_rule_arguments
    from .editing import SELECTIONS, STRATEGIES, THRESHOLDS
    from .sampling.schedules import SCHEDULES

    p = sub.add_parser("edit", help="mask-free editing: change one object named by a word of the source prompt",
                       description="Mask-free edit: a region of the source image is found from the two prompts "
                                   "(--select: where the target prompt expects other tokens, or the cross-attention "
                                   "of the object the word names); tokens outside it stay exactly the source "
                                   "tokens; the region is regenerated with the target prompt.")
    p.add_argument("--model", type=Path, default=None, help="diffusers-layout model folder (default: bundled demo)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="source image (size: a multiple of the model's token size)")
    src.add_argument("--tokens", type=Path, help="source token grid .npy (e.g. from generate --tokens-out)")
    p.add_argument("--source-prompt", required=True, help="a prompt describing the source image")
    p.add_argument("--target-prompt", required=True, help="the prompt of the edited image")
    p.add_argument("--word", required=True, help="the word (or phrase) of the source prompt to change")
    p.add_argument("--negative", default="", help='negative prompt (default "")')
    p.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="sampler inside the region (auto: tcts with --selector, else random-revoke)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the model's tcts_settings.json, else 12)")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's tcts_settings.json, else 10)")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--schedule", default="linear", choices=SCHEDULES,
                   help="mask schedule over the region (default: linear, like the reference inpaint)")
    p.add_argument("--choice-temperature", type=float, nargs=2, default=None, metavar=("START", "END"),
                   help="annealed temperature of the choice noise (default: the model's tcts_settings.json, "
                        "else 2 -> 0)")
    p.add_argument("--temperature", type=float, default=None,
                   help="token sampling temperature (default: the model's tcts_settings.json, else 1)")
    p.add_argument("--select", default="contrast", choices=SELECTIONS,
                   help="what the region follows: contrast = where the target prompt makes the generator expect "
                        "other tokens than the source prompt (any word of the object works); object = the "
                        "cross-attention of the head noun of the word's noun phrase; object+word = both columns; "
                        "word = the word's own columns")
    p.add_argument("--contrast-samples", type=int, default=8,
                   help="contrast: masked forwards per prompt (default 8)")
    p.add_argument("--contrast-mask-ratio", type=float, default=0.8,
                   help="contrast: fraction of the tokens masked in each forward (default 0.8)")
    p.add_argument("--threshold", default="mean_std", choices=THRESHOLDS,
                   help="region: mean_std keeps map > mean + k*std; top_q keeps the strongest fraction")
    p.add_argument("--k", type=float, default=0.0, help="mean_std: standard deviations above the mean (0)")
    p.add_argument("--top-q", type=float, default=0.2, help="top_q: fraction of tokens in the region (0.2)")
    p.add_argument("--no-blur", action="store_true",
                   help="do not blur an attention map (3x3) before thresholding (a contrast map is never blurred)")
    p.add_argument("--dilate", type=int, default=0, help="grow the region by this many tokens")
    p.add_argument("--region-layers", default="", help="cross-attention layers for the map (default: all)")
    p.add_argument("--out", type=Path, required=True, help="edited image PNG")
    p.add_argument("--mask-out", type=Path, default=None, help="write the region as a black/white PNG")
    p.add_argument("--tokens-out", type=Path, default=None, help="write the edited tokens as .npy")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="transformer dtype (VQ stays fp32)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    add_rule_arguments(p)
    p.set_defaults(func=run_edit)


def source_image(args: argparse.Namespace, pipe: Any) -> Any:
    """The picture to edit, from ``--image`` or ``--tokens``."""
    from .images import load_image
    from .starts import EncodedImage, token_grid

    if args.image is not None:
        return pipe.encode(load_image(args.image))
    if not args.tokens.is_file():
        raise FileNotFoundError(f"token file {args.tokens} does not exist")
    array = np.load(args.tokens, allow_pickle=False)
    tokens = torch.from_numpy(np.asarray(array, dtype=np.int64))
    tokens = tokens[None] if tokens.ndim == 2 else tokens
    if tokens.ndim != 3:
        raise ValueError(f"--tokens must hold a [h, w] or [B, h, w] integer grid; got shape {tuple(array.shape)}")
    height, width = tokens.shape[1] * pipe.vq_factor, tokens.shape[2] * pipe.vq_factor
    token_grid(pipe.transformer, width, height, pipe.vq_factor)  # size checks with clear errors
    return EncodedImage(tokens=tokens, width=width, height=height)


def run_edit(args: argparse.Namespace) -> int:
    from .attention import token_pieces
    from .cli_common import (DTYPES, StderrProgress, check_output, model_folder, output_paths, report_model_settings,
                             sampling_from_args, save_npy_atomic)
    from .cli_rules import rule_from_args
    from .editing import EditRequest, RegionOptions, mask_free_edit, region_columns, resolve_strategy
    from .engine import Job, condition
    from .images import save_image, token_mask_to_pixels
    from .pipeline import Pipeline, decode_tokens
    from .starts import Edit

    model_path = model_folder(args)
    check_output("--out", args.out)
    check_output("--mask-out", args.mask_out)
    pipe = Pipeline.from_folder(model_path, dtype=DTYPES[args.dtype])
    pipe.transformer.to(args.device)
    pipe.vq.to(args.device)
    pipe.text_encoder.model.to(args.device)
    image = source_image(args, pipe)
    b = image.tokens.shape[0]
    placeholder = Edit(image, torch.ones_like(image.tokens, dtype=torch.bool))  # for size and schedule
    args.draw_on_device = None
    resolved = pipe.resolve(sampling_from_args(args), placeholder)
    report_model_settings(pipe, resolved, image.width, image.height)
    src_text = pipe.encode_prompts([args.source_prompt])
    columns = region_columns(args.word, token_pieces(pipe.text_encoder.tokenizer, src_text.token_ids[0]),
                             args.source_prompt, args.select)
    negative = pipe.encode_prompts([args.negative]) if resolved.sampling.cfg != 1.0 else None
    strategy = resolve_strategy(args.strategy, args.selector is not None)
    rule = rule_from_args(args, strategy, pipe.transformer, dtype=DTYPES[args.dtype], device=args.device)
    region = RegionOptions(select=args.select, threshold=args.threshold, k=args.k, top_q=args.top_q,
                           blur=not args.no_blur, dilate=args.dilate, layers=args.region_layers or None,
                           samples=args.contrast_samples, mask_ratio=args.contrast_mask_ratio)
    request = EditRequest(source=image, source_condition=condition(src_text, None, placeholder, b),
                          columns=columns, region=region)
    target = Job(condition=condition(pipe.encode_prompts([args.target_prompt]), negative, placeholder, b),
                 sampling=resolved.sampling, rule=rule, seed=args.seed, callback=StderrProgress(f"edit ({strategy})"))
    result = mask_free_edit(pipe.transformer, request, target, pipe.vq_factor)
    images = decode_tokens(pipe.vq, result.tokens)
    paths = output_paths(args.out.with_suffix(".png"), b)
    for picture, path in zip(images, paths):
        save_image(picture, path)
    if args.mask_out is not None:
        pixels = token_mask_to_pixels(result.region.cpu(), pipe.vq_factor)
        for m, path in zip(pixels, output_paths(args.mask_out.with_suffix(".png"), b)):
            save_image(m[..., None].expand(-1, -1, 3), path)
            paths.append(path)
    if args.tokens_out is not None:
        tokens = result.tokens.cpu().numpy().astype(np.int64)
        save_npy_atomic(tokens[0] if b == 1 else tokens, args.tokens_out)
    print("\n".join(str(p) for p in paths))
    return 0

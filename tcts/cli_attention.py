"""Command-line parts of FAS, attention maps and mask-free editing.

* ``generate --sampler fas|tcts-fas`` with ``--fas-*`` options (:func:`add_fas_arguments`,
  :func:`fas_rule_options`);
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

from .attention import FAS_STATISTICS

FAS_SAMPLERS = ("fas", "tcts-fas")


# --------------------------------------------------------------------------------------------------
# FAS options
# --------------------------------------------------------------------------------------------------

def add_fas_arguments(p: argparse.ArgumentParser) -> None:
    from .sampling.fas import LOW_SCORERS, REGROUP

    g = p.add_argument_group("FAS (samplers fas / tcts-fas; see docs/method.md)")
    g.add_argument("--fas-statistic", default="fft_hf", choices=FAS_STATISTICS,
                   help="self-attention statistic that splits LOW/HIGH frequency tokens (default fft_hf)")
    g.add_argument("--fas-q", type=float, default=0.5, help="fraction of tokens in the LOW group (default 0.5)")
    g.add_argument("--fas-cutoff", type=float, default=0.5, help="fft_hf radial cutoff, fraction of Nyquist (0.5)")
    g.add_argument("--fas-layers", default="",
                   help="self-attention layers, e.g. '0-14,20' (default: the first 2/3 of the layers)")
    g.add_argument("--fas-regroup", default="every_step", choices=REGROUP,
                   help="recompute the groups every step, or freeze them after --fas-freeze-after")
    g.add_argument("--fas-freeze-after", type=float, default=0.25, help="warm-up fraction for freeze_after")
    g.add_argument("--fas-smooth", action="store_true", help="3x3 blur of the statistic before grouping")
    g.add_argument("--fas-invert", action="store_true", help="ablation: LOW revocable, HIGH persistent")
    g.add_argument("--fas-low-scorer", default="inner", choices=LOW_SCORERS,
                   help="score of new persistent picks: the inner rule's (default), purity or confidence")
    g.add_argument("--fas-start-frac", type=float, default=0.0, help="run FAS only after this fraction of steps")


def fas_rule_options(args: argparse.Namespace) -> dict[str, Any]:
    """Rule options from the ``--fas-*`` flags (empty unless ``args.sampler`` is fas/tcts-fas). The
    selector of ``tcts-fas`` comes from ``--selector`` (``tcts.selector.cli.selector_rule_options``)."""
    if getattr(args, "sampler", None) not in FAS_SAMPLERS:
        return {}
    return dict(statistic=args.fas_statistic, q=args.fas_q, cutoff=args.fas_cutoff, layers=args.fas_layers or None,
                regroup=args.fas_regroup, freeze_after=args.fas_freeze_after, smooth=args.fas_smooth,
                invert=args.fas_invert, low_scorer=args.fas_low_scorer, start_frac=args.fas_start_frac)


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
    from .images import save_image
    from .pipeline import text_condition

    tokens = result.tokens
    b = tokens.shape[0]
    width, height = int(result.settings["width"]), int(result.settings["height"])
    positive = pipe.encode_prompts(prompts)
    cond = text_condition(positive, None, width, height, b)
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
    from .editing import STRATEGIES, THRESHOLDS
    from .sampling import SCHEDULES
    from .cli import DTYPES

    p = sub.add_parser("edit", help="mask-free editing: change one object named by a word of the source prompt",
                       description="Mask-free edit: the word's cross-attention in the source image defines the "
                                   "region; tokens outside it stay exactly the source tokens; the region is "
                                   "regenerated with the target prompt.")
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
    p.add_argument("--threshold", default="mean_std", choices=THRESHOLDS,
                   help="region: mean_std keeps map > mean + k*std; top_q keeps the strongest fraction")
    p.add_argument("--k", type=float, default=0.0, help="mean_std: standard deviations above the mean (0)")
    p.add_argument("--top-q", type=float, default=0.2, help="top_q: fraction of tokens in the region (0.2)")
    p.add_argument("--no-blur", action="store_true", help="do not blur the map (3x3) before thresholding")
    p.add_argument("--dilate", type=int, default=0, help="grow the region by this many tokens")
    p.add_argument("--region-layers", default="", help="cross-attention layers for the map (default: all)")
    p.add_argument("--out", type=Path, required=True, help="edited image PNG")
    p.add_argument("--mask-out", type=Path, default=None, help="write the region as a black/white PNG")
    p.add_argument("--tokens-out", type=Path, default=None, help="write the edited tokens as .npy")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="transformer dtype (VQ stays fp32)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    from .selector.cli import add_selector_arguments

    add_selector_arguments(p)
    add_fas_arguments(p)
    p.set_defaults(func=run_edit)


def run_edit(args: argparse.Namespace) -> int:
    from .attention import token_pieces, word_columns
    from .cli import DTYPES, StderrProgress, check_output, model_folder, report_model_settings, save_npy_atomic
    from .editing import RegionOptions, mask_free_edit, resolve_strategy
    from .images import load_image, save_image, token_mask_to_pixels
    from .pipeline import Pipeline, decode_tokens, encode_images, make_generators, text_condition, token_grid

    model_path = model_folder(args)
    check_output("--out", args.out)
    check_output("--mask-out", args.mask_out)
    pipe = Pipeline.from_folder(model_path, dtype=DTYPES[args.dtype])
    pipe.transformer.to(args.device)
    pipe.vq.to(args.device)
    pipe.text_encoder.model.to(args.device)
    if args.image is not None:
        source = encode_images(pipe.vq, load_image(args.image))
    else:
        if not args.tokens.is_file():
            raise FileNotFoundError(f"token file {args.tokens} does not exist")
        array = np.load(args.tokens, allow_pickle=False)
        source = torch.from_numpy(np.asarray(array, dtype=np.int64))
        source = source[None] if source.ndim == 2 else source
        if source.ndim != 3:
            raise ValueError(f"--tokens must hold a [h, w] or [B, h, w] integer grid; got shape {tuple(array.shape)}")
    b, h, w = source.shape
    height, width = h * pipe.vq_factor, w * pipe.vq_factor
    token_grid(pipe.transformer, width, height, pipe.vq_factor)  # size checks with clear errors
    resolved = pipe.resolve(steps=args.steps, cfg=args.cfg, schedule=args.schedule,
                            choice_temperature=args.choice_temperature, temperature=args.temperature)
    report_model_settings(pipe, resolved, width, height)
    sampling = resolved.sampling
    src_text = pipe.encode_prompts([args.source_prompt])
    columns = word_columns(args.word, token_pieces(pipe.text_encoder.tokenizer, src_text.token_ids[0]),
                           args.source_prompt)
    source_cond = text_condition(src_text, None, width, height, b)
    negative = pipe.encode_prompts([args.negative]) if sampling.cfg != 1.0 else None
    target_cond = text_condition(pipe.encode_prompts([args.target_prompt]), negative, width, height, b)
    from .selector.cli import selector_rule_options

    strategy = args.sampler = resolve_strategy(args.strategy, {"selector": args.selector})
    options: dict[str, Any] = selector_rule_options(args, pipe.transformer, dtype=DTYPES[args.dtype],
                                                    device=args.device)
    options.update(fas_rule_options(args))
    region = RegionOptions(threshold=args.threshold, k=args.k, top_q=args.top_q, blur=not args.no_blur,
                           dilate=args.dilate, layers=args.region_layers or None)
    result = mask_free_edit(pipe.transformer, source, source_cond, target_cond, columns,
                            generators=make_generators(args.seed, b), strategy=strategy, rule_options=options,
                            steps=sampling.steps, cfg=sampling.cfg, schedule=sampling.schedule,
                            choice_temperature=sampling.choice_temperature, sampling_temperature=sampling.temperature,
                            region=region, callback=StderrProgress(f"edit ({strategy})"))
    images = decode_tokens(pipe.vq, result.tokens)
    from .cli import output_paths

    paths = output_paths(args.out.with_suffix(".png"), b)
    for image, path in zip(images, paths):
        save_image(image, path)
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

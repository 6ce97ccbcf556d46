"""Command line: ``python -m tcts generate | train-selector | edit | bench | bench-edit | bench-speed …``.

Exit status (every subcommand): 0 success; 2 the command line or a file it names is wrong (an unknown or
out-of-range option, a missing or unreadable model, image or selector; nothing is written); 1 the run
itself failed (out of memory, non-finite logits, a file that could not be written).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .cli_common import (DTYPES, EXIT_FAILED, EXIT_STATUS, EXIT_USAGE, HelpFormatter, StderrProgress, UsageError,
                         check_output, default_selector_path, model_folder, output_paths, report_model_settings,
                         sampling_from_args, save_npy_atomic)
from .sampling.registry import SELECTOR_SAMPLERS
from .starts import STRENGTH_MODES, ImageToImage, Inpaint, Start, TextToImage, size_of


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    from .cli_attention import add_attention_arguments
    from .cli_rules import add_rule_arguments, add_sampler_argument
    from .sampling.schedules import SCHEDULES

    p = sub.add_parser("generate", help="text-to-image, img2img or inpaint with a masked generative model",
                       formatter_class=HelpFormatter, epilog=EXIT_STATUS,
                       description="Generate an image. Settings you do not give come from the model folder's "
                                   "tcts_settings.json (the bundled demo model has one), else from diffusers' "
                                   "AmusedPipeline, so the same seed gives the reference's tokens.")
    p.add_argument("--model", type=Path, default=None,
                   help="diffusers-layout model folder (default: the bundled demo model, models/shapes-demo)")
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument("--negative", default="", help='negative prompt (default: "", encoded like the reference)')
    add_sampler_argument(p)
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the model's tcts_settings.json, else 12)")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale, 1 = off (default: the model's tcts_settings.json, else 10)")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--width", type=int, default=None,
                   help="px, a multiple of the model's token size (default: the model's tcts_settings.json, else "
                        "the size it was trained at; from the image for img2img/inpaint)")
    p.add_argument("--height", type=int, default=None, help="px (default: like --width)")
    p.add_argument("--batch-size", type=int, default=1, help="images per run")
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="mask schedule (default: the model's tcts_settings.json, else its scheduler config, "
                        "cosine; linear for inpaint like the reference)")
    p.add_argument("--choice-temperature", type=float, nargs=2, default=None, metavar=("START", "END"),
                   help="annealed temperature of the choice noise (default: the model's tcts_settings.json, "
                        "else 2 -> 0)")
    p.add_argument("--temperature", type=float, default=None,
                   help="token sampling temperature (default: the model's tcts_settings.json, else 1)")
    p.add_argument("--init-image", type=Path, default=None, help="start image for img2img / inpaint")
    p.add_argument("--strength", type=float, default=None, help="img2img strength (default: 0.5; inpaint 1.0)")
    p.add_argument("--strength-mode", default="reference", choices=STRENGTH_MODES,
                   help="reference: strength 1.0 masks nothing (diffusers quirk); full: it masks everything")
    p.add_argument("--mask", type=Path, default=None, help="inpaint mask image (white = regenerate)")
    p.add_argument("--out", type=Path, required=True, help="output PNG (batch > 1: name-<i>.png)")
    p.add_argument("--tokens-out", type=Path, default=None,
                   help="save the final token grid as .npy (int64 [H/t, W/t] for a token size of t px: 16 for "
                        "aMUSEd and Meissonic, 8 for the demo model; [B, ...] for batches)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="transformer dtype (VQ stays fp32)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--draw-on-device", action="store_true",
                   help="draw tokens with per-image generators on --device instead of the reference's CPU "
                        "generators: several times faster per step on a GPU, reproducible on the same GPU, but "
                        "other images than diffusers for the same seed (no effect with --device cpu)")
    add_rule_arguments(p)
    add_attention_arguments(p)
    p.set_defaults(func=run_generate)


def start_from_args(args: argparse.Namespace, pipe) -> Start:
    """Text to image, img2img (``--init-image``) or inpaint (``--init-image`` + ``--mask``)."""
    from .images import load_image, load_mask

    if args.init_image is None:
        width, height = pipe.default_dimensions
        return TextToImage(args.width or width, args.height or height)
    image = pipe.encode(load_image(args.init_image))
    if args.mask is not None:
        return Inpaint(image, load_mask(args.mask), 1.0 if args.strength is None else args.strength)
    return ImageToImage(image, 0.5 if args.strength is None else args.strength, args.strength_mode)


def run_generate(args: argparse.Namespace) -> int:
    from .cli_attention import check_attention_args, write_generation_maps
    from .cli_rules import rule_from_args
    from .images import save_image
    from .pipeline import Pipeline

    model_path = model_folder(args)
    check_output("--out", args.out)
    if args.mask is not None and args.init_image is None:
        raise UsageError("--mask needs --init-image (the picture to inpaint)")
    if args.model is None and args.selector is None and args.sampler in SELECTOR_SAMPLERS:
        args.selector = default_selector_path() if default_selector_path().is_dir() else None
    rule = rule_from_args(args, args.sampler, dtype=DTYPES[args.dtype], device=args.device)
    # one-shot run: load each component when its phase starts and free it after (peak memory = the largest
    # component); attention maps need the transformer again after sampling, so they load everything
    sequential = args.attention_out is None
    pipe = Pipeline.from_folder(model_path, dtype=DTYPES[args.dtype], sequential=sequential, device=args.device)
    if not sequential:
        pipe.transformer.to(args.device)
        pipe.vq.to(args.device)
        pipe.text_encoder.model.to(args.device)
    check_attention_args(args, pipe)
    start = start_from_args(args, pipe)
    sampling = sampling_from_args(args)
    report_model_settings(pipe, pipe.resolve(sampling, start), *size_of(start))
    result = pipe.generate(args.prompt, args.negative, sampler=rule, seed=args.seed, batch_size=args.batch_size,
                           sampling=sampling, start=start, callback=StderrProgress(rule.name))
    paths = output_paths(args.out.with_suffix(".png"), result.tokens.shape[0])
    for image, path in zip(result.images, paths):
        save_image(image, path)
    if args.tokens_out is not None:
        tokens = result.tokens.cpu().numpy().astype(np.int64)
        save_npy_atomic(tokens[0] if tokens.shape[0] == 1 else tokens, args.tokens_out)
    if args.attention_out is not None:
        paths += write_generation_maps(pipe, [args.prompt], result, args.attention_out, args.attention_word)
    print("\n".join(str(p) for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tcts", description="Masked generative text-to-image "
                                     "(aMUSEd, Meissonic) with TCTS / FAS samplers", epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    from .train.cli import add_train_selector_parser
    add_train_selector_parser(sub)
    from .cli_attention import add_edit_parser
    add_edit_parser(sub)
    for name, summary in LAB_SUMMARIES.items():  # listed here, run by the lab (main forwards the arguments)
        sub.add_parser(name, add_help=False, help=f"{summary} (the repository's lab/; see {name} --help)")
    for name, command in sub.choices.items():
        if name not in LAB_COMMANDS:
            command.formatter_class = HelpFormatter
            command.epilog = command.epilog or EXIT_STATUS
    return parser


#: commands the lab provides (research code beside the pack: benchmarks), by module
LAB_COMMANDS = {"bench": "lab.bench.shapes_cli", "bench-speed": "lab.bench.speed", "bench-edit": "lab.bench.edit"}
LAB_SUMMARIES = {"bench": "sampler benchmark on the shapes world (alignment, FD, P/R, detail, time)",
                 "bench-edit": "edit benchmark on the shapes world (success, preservation, region IoU, seam)",
                 "bench-speed": "time and memory against diffusers' AmusedPipeline"}


def run_lab_command(command: str, argv: list[str]) -> int:
    """Hand the arguments to the lab's command. The lab lives beside the pack in a clone of the repository;
    the registry package leaves it out."""
    try:
        module = importlib.import_module(LAB_COMMANDS[command])
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("lab"):
            raise
        raise UsageError(f"`python -m tcts {command}` runs the repository's lab/ folder, which this installation "
                         "does not have (the ComfyUI registry package leaves it out); run it from a clone of the "
                         "repository") from None
    return module.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoints import CheckpointError
    from .errors import OutOfMemory
    from .sampling.step import NonFiniteLogitsError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] and argv[0] in LAB_COMMANDS:
            return run_lab_command(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OutOfMemory, NonFiniteLogitsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED

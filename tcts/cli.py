"""Command line: ``python -m tcts generate | train-selector | edit | bench | bench-speed …``.

Exit status (every subcommand): 0 success; 2 the command line or a file it names is wrong (an unknown or
out-of-range option, a missing or unreadable model, image or selector; nothing is written); 1 the run
itself failed (out of memory, non-finite logits, a file that could not be written).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .atomic import atomic_write
from .cli_help import EXIT_FAILED, EXIT_STATUS, EXIT_USAGE, HelpFormatter, UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
def default_model_path() -> Path:
    """The bundled demo model (shipped with the repository)."""
    return Path(__file__).resolve().parent.parent / "models" / "shapes-demo"


def default_selector_path() -> Path:
    """The TCTS selector trained for the bundled demo model."""
    return Path(__file__).resolve().parent.parent / "models" / "shapes-demo-selector"


class StderrProgress:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.perf_counter()

    def __call__(self, report) -> None:
        done = report.step + 1
        width = 24
        filled = int(width * done / report.steps)
        elapsed = time.perf_counter() - self.start
        end = "\n" if done == report.steps else ""
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{report.steps} "
              f"{elapsed:.1f}s", end=end, file=sys.stderr, flush=True)


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    from .sampling import RULES, SCHEDULES

    p = sub.add_parser("generate", help="text-to-image, img2img or inpaint with a masked generative model",
                       formatter_class=HelpFormatter, epilog=EXIT_STATUS,
                       description="Generate an image. Settings you do not give come from the model folder's "
                                   "tcts_settings.json (the bundled demo model has one), else from diffusers' "
                                   "AmusedPipeline, so the same seed gives the reference's tokens.")
    p.add_argument("--model", type=Path, default=None,
                   help="diffusers-layout model folder (default: the bundled demo model, models/shapes-demo)")
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument("--negative", default="", help='negative prompt (default: "", encoded like the reference)')
    p.add_argument("--sampler", default="purity", choices=sorted(RULES),
                   help="which tokens to keep each step: purity (confidence, the reference), uniform, "
                        "random-revoke, tcts / tcts-fas (need a selector), fas")
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
    p.add_argument("--repredict-visible", action="store_true",
                   help="revocable samplers: re-predict visible tokens instead of copying them "
                        "(only for generators trained on all positions)")
    from .selector.cli import add_selector_arguments
    add_selector_arguments(p)
    p.add_argument("--init-image", type=Path, default=None, help="start image for img2img / inpaint")
    p.add_argument("--strength", type=float, default=None, help="img2img strength (default 0.5; inpaint 1.0)")
    p.add_argument("--strength-mode", default="reference", choices=("reference", "full"),
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
    from .cli_attention import add_attention_arguments, add_fas_arguments
    add_fas_arguments(p), add_attention_arguments(p)
    p.set_defaults(func=run_generate)


def output_paths(out: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(batch)]


def model_folder(args: argparse.Namespace) -> Path:
    """``--model``, or the bundled demo model."""
    path = args.model or default_model_path()
    if args.model is None and not path.exists():
        raise UsageError("no --model given and the bundled demo model is not present")
    return path


def check_output(what: str, path: Path | None) -> None:
    if path is None:
        return
    if path.suffix.lower() not in ("", ".png"):
        raise UsageError(f"{what} must be a .png file; got {path}")
    if not path.parent.exists():
        raise UsageError(f"output folder {path.parent} does not exist")


def report_model_settings(pipe, resolved, width: int, height: int) -> None:
    """Say on stderr which settings came from the model folder, and warn once about an untrained size."""
    line = resolved.describe_model_values(pipe.settings)
    if line:
        print(f"tcts: {line}", file=sys.stderr)
    warning = pipe.settings.size_warning(width, height)
    if warning:
        print(f"tcts: warning: {warning}", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    from .images import load_image, load_mask, save_image
    from .pipeline import Pipeline

    model_path = model_folder(args)
    check_output("--out", args.out)
    if args.mask is not None and args.init_image is None:
        raise UsageError("--mask needs --init-image (the picture to inpaint)")
    from .selector.cli import (  # loads --selector before the model
        SELECTOR_SAMPLERS,
        selector_rule_options,
    )
    if args.model is None and args.selector is None and args.sampler in SELECTOR_SAMPLERS:
        args.selector = default_selector_path() if default_selector_path().is_dir() else None
    selector_options = selector_rule_options(args, None, dtype=DTYPES[args.dtype], device=args.device)
    # one-shot run: load each component when its phase starts and free it after (peak memory = the largest
    # component); attention maps need the transformer again after sampling, so they load everything
    sequential = args.attention_out is None
    pipe = Pipeline.from_folder(model_path, dtype=DTYPES[args.dtype], sequential=sequential, device=args.device)
    if not sequential:
        pipe.transformer.to(args.device)
        pipe.vq.to(args.device)
        pipe.text_encoder.model.to(args.device)
    init = load_image(args.init_image) if args.init_image else None
    mask = load_mask(args.mask) if args.mask else None
    width, height = (init.shape[2], init.shape[1]) if init is not None else pipe.default_dimensions
    width, height = args.width or width, args.height or height
    report_model_settings(pipe, pipe.resolve(steps=args.steps, cfg=args.cfg, schedule=args.schedule,
                                             choice_temperature=args.choice_temperature, temperature=args.temperature),
                          width, height)
    options = {"repredict_visible": True} if args.repredict_visible else {}
    options.update(selector_options)
    from .cli_attention import (
        check_attention_args,
        fas_rule_options,
        write_generation_maps,
    )
    options.update(fas_rule_options(args)), check_attention_args(args, pipe)
    result = pipe.generate(
        args.prompt, args.negative, sampler=args.sampler, steps=args.steps, cfg=args.cfg, seed=args.seed,
        width=args.width, height=args.height, batch_size=args.batch_size, schedule=args.schedule,
        choice_temperature=args.choice_temperature and tuple(args.choice_temperature),
        sampling_temperature=args.temperature,
        init_image=init, strength=args.strength, strength_mode=args.strength_mode, mask=mask,
        rule_options=options, draw_on_device=args.draw_on_device, callback=StderrProgress(args.sampler))
    paths = output_paths(args.out.with_suffix(".png"), args.batch_size)
    for image, path in zip(result.images, paths):
        save_image(image, path)
    if args.tokens_out is not None:
        tokens = result.tokens.cpu().numpy().astype(np.int64)
        save_npy_atomic(tokens[0] if args.batch_size == 1 else tokens, args.tokens_out)
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
    from .bench.shapes_cli import add_bench_parser
    add_bench_parser(sub)
    bench = sub.add_parser("bench-speed", add_help=False,
                           help="time and memory against diffusers' AmusedPipeline (see --help)")
    bench.set_defaults(func=None)  # forwarded whole to tcts.bench.speed in main()
    for name, command in sub.choices.items():
        if name != "bench-speed":
            command.formatter_class = HelpFormatter
            command.epilog = command.epilog or EXIT_STATUS
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoints import CheckpointError
    from .errors import OutOfMemory
    from .sampling import NonFiniteLogitsError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench-speed"]:
            from .bench.speed import main as bench_main

            return bench_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OutOfMemory, NonFiniteLogitsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED

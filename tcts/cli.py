"""Command line: ``python -m tcts generate | train-selector | edit | bench | bench-speed …``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .atomic import atomic_write

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
                       description="Generate an image. Defaults equal diffusers' AmusedPipeline, so the same "
                                   "seed gives the reference's tokens.")
    p.add_argument("--model", type=Path, default=None,
                   help="diffusers-layout model folder (default: the bundled demo model)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="", help='negative prompt (default "", encoded like the reference)')
    p.add_argument("--sampler", default="purity", choices=sorted(RULES))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--cfg", type=float, default=10.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="mask schedule (default: the model's, cosine; linear for inpaint like the reference)")
    p.add_argument("--choice-temperature", type=float, nargs=2, default=(2.0, 0.0), metavar=("START", "END"),
                   help="annealed temperature of the choice noise (default 2 -> 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="token sampling temperature")
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
                   help="save the final token grid as .npy (int64 [H/16, W/16]; [B, ...] for batches)")
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


def run_generate(args: argparse.Namespace) -> int:
    from .images import load_image, load_mask, save_image
    from .pipeline import Pipeline

    model_path = args.model or default_model_path()
    if args.model is None and not model_path.exists():
        raise SystemExit("error: no --model given and the bundled demo model is not present")
    if args.out.suffix.lower() not in ("", ".png"):
        raise SystemExit(f"error: --out must be a .png file; got {args.out}")
    if not args.out.parent.exists():
        raise SystemExit(f"error: output folder {args.out.parent} does not exist")
    if args.mask is not None and args.init_image is None:
        raise SystemExit("error: --mask needs --init-image (the picture to inpaint)")
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
        choice_temperature=tuple(args.choice_temperature), sampling_temperature=args.temperature,
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
                                     "(aMUSEd, Meissonic) with TCTS / FAS samplers")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoints import CheckpointError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench-speed"]:
        from .bench.speed import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

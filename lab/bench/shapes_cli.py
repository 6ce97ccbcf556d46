"""Command-line options of ``python -m tcts bench`` (the shapes sampler benchmark in :mod:`lab.bench.shapes`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from tcts.cli_common import EXIT_STATUS, HelpFormatter
from tcts.cli_rules import add_family_arguments, families_from_args
from tcts.options import add_arguments, from_args
from tcts.sampling.fas_options import FASOptions
from tcts.sampling.registry import RuleOptions
from tcts.selector.rule import SelectorOptions
from . import shapes
from .shapes import DEFAULT_FEATURES, DEFAULT_MODEL, DEFAULT_OUT, DEFAULT_SAMPLERS, DEFAULT_STEPS, QUICK, BenchSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tcts bench", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
                                description="Sampler benchmark on the shapes world: for each sampler x step count, "
                                            "detector alignment, Fréchet distance and precision/recall to real renders "
                                            "(shapes feature net), background detail (HF energy ratio), time per image, "
                                            "and paired-bootstrap intervals of accuracy differences. See "
                                            "lab/bench/shapes.py and BENCHMARKS.md.")
    add_bench_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m tcts bench ...`` (also ``python -m lab.bench.shapes_cli ...``)."""
    return run_bench_command(build_parser().parse_args(argv))


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="shapes model folder (default models/shapes-demo)")
    p.add_argument("--selector", type=Path, default=None,
                   help="TCTS selector folder for tcts / tcts-fas (default: models/shapes-demo-selector for the "
                        "default model, else <model>/selector)")
    p.add_argument("--features", type=Path, default=DEFAULT_FEATURES,
                   help="feature network folder from lab/scripts/train_features.py (default lab/models/shapes-features)")
    p.add_argument("--samplers", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_SAMPLERS)}")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="step counts (default: 8 16 25)")
    p.add_argument("--captions", type=int, default=None, help="held-out captions (default 1000)")
    p.add_argument("--seeds", type=int, default=None, help="sampling seeds per caption: 0 .. N-1 (default 2)")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale (default 2)")
    p.add_argument("--batch-size", type=int, default=100, help="images per sampling batch (default 100)")
    p.add_argument("--size", type=int, default=None,
                   help="generation size in px (default: the model's native size; images larger than 64 px are "
                        "area-averaged to 64 px for every metric)")
    p.add_argument("--split", default="heldout", choices=("heldout", "train", "any"), help="caption split")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['captions']} captions, {QUICK['seeds']} seed, steps "
                        f"{' '.join(map(str, QUICK['steps']))} (explicit --captions/--seeds/--steps win)")
    p.add_argument("--skip-missing-selector", action="store_true",
                   help="without a selector, drop tcts / tcts-fas with a warning instead of failing")
    p.add_argument("--no-resume", action="store_true", help="recompute every unit (ignore --out/units)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default lab/results/shapes)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads were slower)")
    p.add_argument("--device", default="cpu", help="torch device for the generator and selector")
    g = p.add_argument_group("TCTS selector options")
    add_arguments(g, SelectorOptions, "selector-")
    add_arguments(p.add_argument_group("FAS (samplers fas / tcts-fas; see docs/method.md)"), FASOptions, "fas-")
    add_family_arguments(p)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    quick = QUICK if args.quick else {}

    def pick(value, name: str, default):
        return value if value is not None else quick.get(name, default)

    return BenchSettings(
        model=args.model, selector=args.selector, features=args.features,
        samplers=tuple(pick(args.samplers, "samplers", DEFAULT_SAMPLERS)),
        steps=tuple(pick(args.steps, "steps", DEFAULT_STEPS)),
        captions=pick(args.captions, "captions", 1000), seeds=pick(args.seeds, "seeds", 2),
        cfg=args.cfg, batch_size=args.batch_size, split=args.split, out=args.out, device=args.device, size=args.size,
        skip_missing_selector=args.skip_missing_selector, resume=not args.no_resume,
        options=RuleOptions(selector=from_args(args, SelectorOptions, "selector-"),
                            fas=from_args(args, FASOptions, "fas-"), **families_from_args(args)))


def run_bench_command(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = shapes.run_bench(settings_from_args(args))
    finally:
        torch.set_num_threads(previous)
    print(result["markdown"])
    print(f"\nwrote {', '.join(result['files'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every ``python -m tcts`` command shares: its help format, its exit status, the bundled model's paths,
progress on stderr, output checks and files."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .settings import Sampling

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

EXIT_USAGE, EXIT_FAILED = 2, 1
EXIT_STATUS = ("exit status: 0 success; 2 the command line or a file it names is wrong (nothing is written); "
               "1 the run failed (out of memory, non-finite logits, a file that could not be written)")


class UsageError(ValueError):
    """The command line asks for something impossible (exit status 2)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (options whose default depends on the model say so in
    their own words; an absent value reads "none", a flag "off")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or not action.option_strings or action.required or default is argparse.SUPPRESS:
            return text
        if default is None:
            return text + " (default: none)"
        if default is False:
            return text + " (default: off)"
        if isinstance(default, (tuple, list)):
            return text + f" (default: {' '.join(map(str, default))})"
        return text + " (default: %(default)s)"


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
        end = "\n" if done == report.steps or not report.masked.any() else ""  # a run may end early
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{report.steps} "
              f"{elapsed:.1f}s", end=end, file=sys.stderr, flush=True)


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".npy")


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


def output_paths(out: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(batch)]


def sampling_from_args(args: argparse.Namespace) -> Sampling:
    """What the command line sets of the sampling settings (``None``: the model's or the reference's)."""
    return Sampling(steps=args.steps, cfg=args.cfg, schedule=args.schedule,
                    choice_temperature=tuple(args.choice_temperature) if args.choice_temperature else None,
                    temperature=args.temperature, draw_on_device=getattr(args, "draw_on_device", None) or None)

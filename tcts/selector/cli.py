"""Command-line options of the learned samplers: ``generate --sampler tcts --selector PATH …``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .rule import CHOICES

SELECTOR_SAMPLERS = ("tcts", "tcts-fas")   # samplers that read a trained selector


def add_selector_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TCTS selector (--sampler tcts)")
    g.add_argument("--selector", type=Path, default=None,
                   help="trained selector folder (config.json + model.safetensors), e.g. OUT/selector from "
                        "train-selector); without --model and --selector, the bundled demo model's selector "
                        "(models/shapes-demo-selector)")
    g.add_argument("--selector-guidance", type=float, default=1.0,
                   help="selector guidance w: p_null + w*(p_cond - p_null) (1 = off, one selector pass)")
    g.add_argument("--selector-noise", type=float, default=0.0,
                   help="annealed noise alpha on the keep-score: alpha*(1-progress)*U(0,1)")
    g.add_argument("--selector-choice", default="topk", choices=CHOICES,
                   help="keep the top-n scores (topk) or draw the kept set by score (multinomial)")


def selector_rule_options(args: argparse.Namespace, generator: torch.nn.Module | None = None, *,
                          dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Rule options for the chosen sampler: loads ``--selector`` when needed, checked against ``generator``
    when given (otherwise the rule checks codebook size and text width at the first step)."""
    from .model import load_selector

    if args.sampler not in SELECTOR_SAMPLERS:
        if args.selector is not None:
            raise ValueError(f"--selector is only used by the {' / '.join(SELECTOR_SAMPLERS)} samplers, not "
                             f"{args.sampler!r}")
        return {}
    if args.selector is None:
        raise ValueError(f"--sampler {args.sampler} needs --selector PATH (a folder from train-selector)")
    selector = load_selector(args.selector, generator, dtype=dtype, device=device)
    return {"selector": selector, "guidance": args.selector_guidance, "noise": args.selector_noise,
            "choice": args.selector_choice}

"""The command line's sampler options, built from the option families (``tcts/options.py``): ``--sampler``,
``--selector PATH`` with ``--selector-*``, ``--fas-*``, ``--repredict-visible`` and the flags of the samplers
added after the paper (``--halton-*``, ``--remdm-*``, ``--eb-*``, ``--noise-scale``)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .options import add_arguments, from_args
from .sampling.entropy_bounded import EntropyBoundedOptions
from .sampling.fas_options import FASOptions
from .sampling.halton import HaltonOptions
from .sampling.noise_regularized import NoiseRegularizedOptions
from .sampling.remdm import ReMDMOptions
from .sampling.registry import RULES, SAMPLERS, SELECTOR_SAMPLERS, RuleOptions, make_rule
from .sampling.rules import RevocableOptions, Rule
from .selector.model import TokenSelector, load_selector
from .selector.rule import SelectorOptions


#: the option families of the samplers added after the paper: (RuleOptions field, family, flag prefix, group)
FAMILIES = (
    ("halton", HaltonOptions, "halton-", "Halton (sampler halton)"),
    ("remdm", ReMDMOptions, "remdm-", "ReMDM (samplers remdm / fas-remdm)"),
    ("entropy_bounded", EntropyBoundedOptions, "eb-", "entropy-bounded (sampler entropy-bounded)"),
    ("noise_regularized", NoiseRegularizedOptions, "", "noise regularisation (sampler noise-regularized)"),
)


def add_sampler_argument(p: argparse.ArgumentParser, default: str = "purity") -> None:
    listed = "; ".join(f"{name}: {RULES[name].summary}" for name in SAMPLERS)
    p.add_argument("--sampler", default=default, choices=SAMPLERS, help=f"which tokens to keep each step ({listed})")


def add_rule_arguments(p: argparse.ArgumentParser) -> None:
    """The option families of the rules, as ``--selector``, ``--selector-*``, ``--fas-*``, ``--repredict-visible``."""
    g = p.add_argument_group("TCTS selector (samplers tcts / tcts-fas)")
    g.add_argument("--selector", type=Path, default=None,
                   help="trained selector folder (config.json + model.safetensors, e.g. OUT/selector from "
                        "train-selector; default: none, except for the bundled demo model, whose selector "
                        "models/shapes-demo-selector is used)")
    add_arguments(g, SelectorOptions, "selector-")
    add_arguments(p.add_argument_group("FAS (samplers fas / tcts-fas; see docs/method.md)"), FASOptions, "fas-")
    add_arguments(p.add_argument_group("revocable samplers"), RevocableOptions, "")
    add_family_arguments(p)


def add_family_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the samplers added after the paper (:data:`FAMILIES`)."""
    for _, family, prefix, title in FAMILIES:
        add_arguments(p.add_argument_group(title), family, prefix)


def families_from_args(args: argparse.Namespace) -> dict:
    """``RuleOptions`` fields of :data:`FAMILIES` from the flags :func:`add_family_arguments` added."""
    return {field: from_args(args, family, prefix) for field, family, prefix, _ in FAMILIES}


def rule_options_from_args(args: argparse.Namespace, selector: TokenSelector | None = None) -> RuleOptions:
    return RuleOptions(revocable=from_args(args, RevocableOptions, ""),
                       selector=from_args(args, SelectorOptions, "selector-"),
                       fas=from_args(args, FASOptions, "fas-"), selector_model=selector, **families_from_args(args))


def rule_from_args(args: argparse.Namespace, sampler: str, generator: torch.nn.Module | None = None, *,
                   dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Rule:
    """The rule ``sampler`` with the command line's options; loads ``--selector`` when the sampler reads one
    (checked against ``generator`` when given)."""
    selector = None
    if sampler in SELECTOR_SAMPLERS:
        if args.selector is None:
            raise ValueError(f"--sampler {sampler} needs --selector PATH (a folder from train-selector)")
        selector = load_selector(args.selector, generator, dtype=dtype, device=device)
    elif args.selector is not None:
        raise ValueError(f"--selector is only used by the {' / '.join(SELECTOR_SAMPLERS)} samplers, not {sampler!r}")
    return make_rule(sampler, rule_options_from_args(args, selector))

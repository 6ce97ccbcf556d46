"""Every sampling rule the engine knows, listed explicitly, and how to build one by name.

To add a sampler: write its rule (a :class:`~tcts.sampling.rules.Rule`, with an option family if it has
options) in one module and add one :class:`RuleEntry` here; the CLI's ``--sampler`` choices, the sampler
nodes' choices and the benchmark's names come from this list (docs/add-a-sampler.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..selector.model import TokenSelector
from ..selector.rule import TCTS, SelectorOptions
from .entropy_bounded import EntropyBounded, EntropyBoundedOptions
from .fas import FAS, FASOptions
from .halton import Halton, HaltonOptions
from .noise_regularized import NoiseRegularized, NoiseRegularizedOptions
from .remdm import ReMDM, ReMDMOptions
from .rules import Purity, RandomRevoke, RevocableOptions, Rule, Uniform


@dataclass(frozen=True)
class RuleOptions:
    """The options of every family, with their defaults; a rule reads the families it uses."""

    revocable: RevocableOptions = field(default_factory=RevocableOptions)
    selector: SelectorOptions = field(default_factory=SelectorOptions)
    fas: FASOptions = field(default_factory=FASOptions)
    halton: HaltonOptions = field(default_factory=HaltonOptions)
    remdm: ReMDMOptions = field(default_factory=ReMDMOptions)
    entropy_bounded: EntropyBoundedOptions = field(default_factory=EntropyBoundedOptions)
    noise_regularized: NoiseRegularizedOptions = field(default_factory=NoiseRegularizedOptions)
    selector_model: TokenSelector | None = None     # a loaded selector, for tcts and tcts-fas


def _selector_rule(options: RuleOptions, sampler: str) -> TCTS:
    if options.selector_model is None:
        raise ValueError(f"the {sampler} sampler needs a trained selector (load one with "
                         "tcts.selector.load_selector; on the command line --selector PATH)")
    return TCTS(options.selector_model, options.selector, options.revocable)


@dataclass(frozen=True)
class RuleEntry:
    name: str
    kind: str                                   # persistent | revocable | both (FAS)
    summary: str
    build: Callable[[RuleOptions], Rule]
    families: tuple[str, ...] = ()              # the RuleOptions fields the rule reads
    needs_selector: bool = False


ENTRIES = (
    RuleEntry("purity", "persistent", "MaskGIT/aMUSEd confidence (the reference sampler)", lambda o: Purity()),
    RuleEntry("uniform", "persistent", "a random order", lambda o: Uniform()),
    RuleEntry("random-revoke", "revocable", "a random kept set over all positions each step",
              lambda o: RandomRevoke(o.revocable), ("revocable",)),
    RuleEntry("tcts", "revocable", "the learned text-conditioned token selector",
              lambda o: _selector_rule(o, "tcts"), ("revocable", "selector"), needs_selector=True),
    RuleEntry("fas", "both", "frequency adaptive sampling around random-revoke",
              lambda o: FAS(RandomRevoke(o.revocable), o.fas), ("revocable", "fas")),
    RuleEntry("tcts-fas", "both", "frequency adaptive sampling around the learned selector",
              lambda o: FAS(_selector_rule(o, "tcts-fas"), o.fas), ("revocable", "selector", "fas"),
              needs_selector=True),
    RuleEntry("halton", "persistent", "a fixed low-discrepancy spatial order (Halton sequence; Besnier et al. 2025)",
              lambda o: Halton(o.halton), ("halton",)),
    RuleEntry("remdm", "revocable", "re-mask decoded tokens at a scheduled rate (ReMDM; Wang et al. 2025)",
              lambda o: ReMDM(o.remdm, o.revocable), ("revocable", "remdm")),
    RuleEntry("fas-remdm", "both", "frequency adaptive sampling around remdm",
              lambda o: FAS(ReMDM(o.remdm, o.revocable), o.fas), ("revocable", "remdm", "fas")),
    RuleEntry("entropy-bounded", "persistent", "as many tokens per step as an entropy budget allows, never fewer "
              "than the schedule (EB-sampler; Ben-Hamu et al. 2025)", lambda o: EntropyBounded(o.entropy_bounded),
              ("entropy_bounded",)),
    RuleEntry("noise-regularized", "persistent", "purity with Gaussian noise on the logits that score the choice "
              "(Shao et al. 2024)", lambda o: NoiseRegularized(o.noise_regularized), ("noise_regularized",)),
)
RULES: dict[str, RuleEntry] = {entry.name: entry for entry in ENTRIES}
SAMPLERS = tuple(sorted(RULES))
SELECTOR_SAMPLERS = tuple(name for name, entry in RULES.items() if entry.needs_selector)


def make_rule(name: str, options: RuleOptions | None = None) -> Rule:
    """Build a listed rule by name (``purity``, ``uniform``, ``random-revoke``, ``tcts``, ``fas``, ``halton``, …)."""
    if name not in RULES:
        raise ValueError(f"sampler {name!r} is unknown; expected one of {', '.join(SAMPLERS)}")
    return RULES[name].build(options or RuleOptions())

"""Masked sampling: one loop (``loop.sample``), mask schedules and selection rules."""
from .loop import Conditioning, NonFiniteLogitsError, StepReport, guided_logits, sample
from .rules import RULES, Purity, RandomRevoke, Selection, SelectionRule, StepState, Uniform, make_rule
from .schedules import SCHEDULES, choice_temperatures, mask_ratio, tokens_to_mask

__all__ = [
    "Conditioning", "NonFiniteLogitsError", "StepReport", "guided_logits", "sample", "RULES", "Purity",
    "RandomRevoke", "Selection", "SelectionRule", "StepState", "Uniform", "make_rule", "SCHEDULES",
    "choice_temperatures", "mask_ratio", "tokens_to_mask",
]

from ..selector import rule as _tcts_rule  # noqa: E402,F401  (registers the learned "tcts" rule in RULES)
from . import fas as _fas_rules  # noqa: E402,F401  (registers "fas" and "tcts-fas" in RULES)

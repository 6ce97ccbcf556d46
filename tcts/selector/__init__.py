"""TCTS: the learned text-conditioned token selector (model + the ``tcts`` sampling rule; the rule is listed
with every other in ``tcts.sampling.registry``)."""
from .model import (SelectorConfig, SelectorMismatchError, TokenSelector, check_selector_matches, is_selector_folder,
                    load_selector, parameter_count, save_selector)
from .rule import TCTS

__all__ = ["SelectorConfig", "SelectorMismatchError", "TokenSelector", "check_selector_matches", "is_selector_folder",
           "load_selector", "parameter_count", "save_selector", "TCTS"]

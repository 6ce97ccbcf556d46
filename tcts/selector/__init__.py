"""TCTS: the learned text-conditioned token selector (model + the ``tcts`` sampling rule).

Importing this package registers the ``tcts`` rule in ``tcts.sampling.rules.RULES`` (``tcts.sampling``
imports it too), so ``make_rule("tcts", selector=load_selector(path, generator))`` works anywhere.
"""
from .model import (SelectorConfig, SelectorMismatchError, TokenSelector, check_selector_matches, is_selector_folder,
                    load_selector, parameter_count, save_selector)
from .rule import TCTS

__all__ = ["SelectorConfig", "SelectorMismatchError", "TokenSelector", "check_selector_matches", "is_selector_folder",
           "load_selector", "parameter_count", "save_selector", "TCTS"]

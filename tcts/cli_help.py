"""What every ``python -m tcts`` command shares: its help format and its exit status."""
from __future__ import annotations

import argparse

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

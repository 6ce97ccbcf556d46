"""The options of FAS (frequency adaptive sampling; docs/method.md, FAS): one spec for the CLI's ``--fas-*``
flags, the nodes and the rule. Apart from ``fas.py`` so that attention maps can use it too."""
from __future__ import annotations

from dataclasses import dataclass

from ..layers import parse_layers
from ..options import option, validate

FAS_STATISTICS = ("fft_hf", "entropy", "locality")
REGROUP = ("every_step", "freeze_after")
LOW_SCORERS = ("inner", "purity", "confidence")


@dataclass(frozen=True)
class FASOptions:
    """The options of FAS (one spec for the CLI's ``--fas-*`` flags, the nodes and the rule)."""

    statistic: str = option("fft_hf", "how self-attention splits tokens: fft_hf = share of the attention row's "
                                      "FFT power above the cutoff (low = LOW frequency); entropy / locality: diffuse "
                                      "or long-range rows are LOW", choices=FAS_STATISTICS, advanced=True)
    q: float = option(0.5, "fraction of tokens in the LOW-frequency (persistent) group, per image", minimum=0.0,
                      maximum=1.0, step=0.05)
    cutoff: float = option(0.5, "fft_hf: radial frequency cutoff as a fraction of Nyquist", minimum=0.0,
                           maximum=1.41, step=0.05, advanced=True)
    regroup: str = option("every_step", "recompute the groups every step, or keep those of the warm-up "
                                        "(no attention capture afterwards)", choices=REGROUP, advanced=True)
    freeze_after: float = option(0.25, "regroup freeze_after: warm-up fraction of the steps", minimum=0.0,
                                 maximum=1.0, step=0.05, advanced=True)
    smooth: bool = option(False, "3x3 blur of the statistic before grouping", advanced=True)
    invert: bool = option(False, "ablation: LOW revocable, HIGH persistent (the opposite reading of the paper)",
                          advanced=True)
    low_scorer: str = option("inner", "which LOW tokens become persistent: the inner rule's keep-score, purity "
                                      "p(x) or MaskGIT confidence", choices=LOW_SCORERS, advanced=True)
    start_frac: float = option(0.0, "run the inner revocable rule alone before this fraction of the steps",
                               minimum=0.0, maximum=1.0, step=0.05, advanced=True)
    layers: str = option("", "self-attention layers, e.g. '0-14' or '0,3,5' (empty: the first 2/3)",
                         advanced=True)

    def __post_init__(self) -> None:
        validate(self)
        parse_layers(self.layers)  # a wrong layer list fails here, with the same message as later



"""TCTS + FAS Sampler: Frequency Adaptive Sampling around random-revoke, or around the learned selector.

Same inputs as the other sampler nodes (``common_inputs()``) plus the FAS options (docs/method.md, FAS) and an
optional selector: without one the revocable (HIGH-frequency) group is sampled by random-revoke (rule
``fas``); with one, by TCTS (rule ``tcts-fas``).
"""
from __future__ import annotations

from .api import io

from ..tcts.attention import FAS_STATISTICS
from ..tcts.sampling.fas import REGROUP
from ..tcts.selector import check_selector_matches
from ..tcts.selector.rule import CHOICES
from .samplers import common_inputs, run_sampler
from .selector import SelectorBundle, SelectorType
from .types import SAMPLERS_CATEGORY, GeneratorBundle, TokensType

LOW_SCORERS = ["inner", "purity", "confidence"]


def fas_inputs() -> list:
    """The FAS options (names = the rule's options)."""
    return [
        io.Combo.Input("statistic", options=list(FAS_STATISTICS), default="fft_hf",
                       tooltip="how self-attention splits tokens: fft_hf = share of the attention row's FFT power "
                               "above the cutoff (low = LOW frequency); entropy / locality: diffuse or long-range "
                               "rows are LOW"),
        io.Float.Input("q", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="fraction of tokens in the LOW-frequency (persistent) group, per image"),
        io.Float.Input("cutoff", default=0.5, min=0.0, max=1.41, step=0.05,
                       tooltip="fft_hf: radial frequency cutoff as a fraction of Nyquist"),
        io.Combo.Input("regroup", options=list(REGROUP), default="every_step",
                       tooltip="recompute the groups every step, or keep those of the warm-up (no attention "
                               "capture afterwards)"),
        io.Float.Input("freeze_after", default=0.25, min=0.0, max=1.0, step=0.05,
                       tooltip="freeze_after: warm-up fraction of the steps"),
        io.Boolean.Input("smooth", default=False, tooltip="3x3 blur of the statistic before grouping"),
        io.Boolean.Input("invert", default=False,
                         tooltip="ablation: LOW revocable, HIGH persistent (the opposite reading of the paper)"),
        io.Combo.Input("low_scorer", options=LOW_SCORERS, default="inner",
                       tooltip="which LOW tokens become persistent: the inner rule's keep-score (TCTS / random), "
                               "purity p(x), or MaskGIT confidence"),
        io.Float.Input("start_frac", default=0.0, min=0.0, max=1.0, step=0.05,
                       tooltip="run the inner revocable rule alone before this fraction of the steps"),
        io.String.Input("layers", default="",
                        tooltip="self-attention layers, e.g. '0-14' or '0,3,5' (empty: the first 2/3)"),
    ]


class TCTSFASSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSFASSampler", display_name="TCTS + FAS Sampler", category=SAMPLERS_CATEGORY,
            description="Frequency Adaptive Sampling (Lee et al. 2023, project definition): each step the "
                        "generator's self-attention splits the tokens into LOW and HIGH frequency; LOW tokens are "
                        "kept persistently (never re-masked once kept), HIGH tokens revocably — by TCTS when a "
                        "selector is connected, by random-revoke otherwise.",
            inputs=[*fas_inputs(), *common_inputs(),
                    SelectorType.Input("selector", optional=True,
                                       tooltip="a Load Token Selector output: TCTS samples the HIGH group"),
                    io.Float.Input("selector_guidance", default=1.0, min=0.0, max=20.0, step=0.1, optional=True,
                                   tooltip="with a selector: p_null + w·(p_cond − p_null); 1 = off"),
                    io.Float.Input("selector_noise", default=0.0, min=0.0, max=10.0, step=0.05, optional=True,
                                   tooltip="with a selector: annealed noise α·(1 − progress)·U(0, 1) on the score"),
                    io.Combo.Input("selector_choice", options=list(CHOICES), default="topk", optional=True)],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, statistic: str, q: float, cutoff: float, regroup: str, freeze_after: float, smooth: bool,
                invert: bool, low_scorer: str, start_frac: float, layers: str, model: GeneratorBundle,
                selector: SelectorBundle | None = None, selector_guidance: float = 1.0, selector_noise: float = 0.0,
                selector_choice: str = "topk", **kwargs) -> io.NodeOutput:
        options = dict(statistic=statistic, q=q, cutoff=cutoff, regroup=regroup, freeze_after=freeze_after,
                       smooth=smooth, invert=invert, low_scorer=low_scorer, start_frac=start_frac,
                       layers=layers.strip() or None)
        rule, extra = "fas", []
        if selector is not None:
            check_selector_matches(selector.model, model.model, source=f"selector {selector.name}")
            options.update(selector=selector.model, guidance=selector_guidance, noise=selector_noise,
                           choice=selector_choice)
            rule, extra = "tcts-fas", [selector.patcher]
        return io.NodeOutput(run_sampler(rule, options, model=model, extra_patchers=extra, **kwargs))


NODES = [TCTSFASSampler]

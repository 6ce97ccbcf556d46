"""TCTS + FAS Sampler: Frequency Adaptive Sampling around random-revoke, or around the learned selector.

Same inputs as the other sampler nodes (``common_inputs()``) plus every FAS option (docs/method.md, FAS;
the inputs come from ``FASOptions``) and an optional selector: without one the revocable (HIGH-frequency)
group is sampled by random-revoke (rule ``fas``); with one, by TCTS (rule ``tcts-fas``).
"""
from __future__ import annotations

from dataclasses import replace

from ..tcts.sampling.fas_options import FASOptions
from ..tcts.sampling.registry import RuleOptions, make_rule
from ..tcts.selector.rule import SelectorOptions
from .api import io
from .options import option_inputs, option_values
from .samplers import SamplerInputs, common_inputs, sample_tokens
from .selector import SelectorBundle, SelectorType, selector_rule_options
from .types import SAMPLERS_CATEGORY, GeneratorBundle, TokensType


class TCTSFASSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSFASSampler", display_name="TCTS + FAS Sampler", category=SAMPLERS_CATEGORY,
            description="Frequency Adaptive Sampling (Lee et al. 2023, project definition): each step the "
                        "generator's self-attention splits the tokens into LOW and HIGH frequency; LOW tokens are "
                        "kept persistently (never re-masked once kept), HIGH tokens revocably — by TCTS when a "
                        "selector is connected, by random-revoke otherwise.",
            inputs=[*option_inputs(FASOptions), *common_inputs(),
                    SelectorType.Input("selector", optional=True,
                                       tooltip="a Load Token Selector output: TCTS samples the HIGH group"),
                    *option_inputs(SelectorOptions, prefix="selector_", optional=True)],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, model: GeneratorBundle, selector: SelectorBundle | None = None, **inputs) -> io.NodeOutput:
        fas = option_values(FASOptions, inputs)
        if selector is None:
            return io.NodeOutput(sample_tokens(make_rule("fas", RuleOptions(fas=fas)),
                                               SamplerInputs.of({"model": model, **inputs})))
        options = replace(selector_rule_options(selector, model, inputs), fas=fas)
        return io.NodeOutput(sample_tokens(make_rule("tcts-fas", options), SamplerInputs.of({"model": model, **inputs}),
                                           [selector.patcher]))


NODES = [TCTSFASSampler]

"""Composable samplers: small rule nodes and one *Masked Sampler (Custom)* node that runs any of them.

Like ComfyUI's ``SamplerCustomAdvanced``, the strategy is a socket: Purity, Uniform, Random Revoke, TCTS,
Halton, ReMDM, Entropy-bounded and Noise-regularized nodes output a ``TCTS_RULE``; the FAS node takes a
revocable rule and wraps it, so "FAS around TCTS" is a visible link in the graph. The ablation knobs of FAS live on a separate *FAS Options* node. The custom
sampler has the inputs every sampler node has and gives the same tokens as the per-strategy nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tcts.sampling.entropy_bounded import EntropyBoundedOptions
from ..tcts.sampling.fas import FAS
from ..tcts.sampling.fas_options import FASOptions
from ..tcts.sampling.halton import HaltonOptions
from ..tcts.sampling.noise_regularized import NoiseRegularizedOptions
from ..tcts.sampling.remdm import ReMDMOptions
from ..tcts.sampling.registry import RuleOptions, make_rule
from ..tcts.sampling.rules import RevocableOptions, Rule
from ..tcts.selector.rule import SelectorOptions
from .api import io
from .options import option_inputs, option_values
from .samplers import SamplerInputs, common_inputs, sample_tokens
from .selector import SelectorBundle, SelectorType, selector_rule_options
from .types import RULES_CATEGORY, SAMPLERS_CATEGORY, GeneratorBundle, ModelType, TokensType

RuleType = io.Custom("TCTS_RULE")
FASOptionsType = io.Custom("TCTS_FAS_OPTIONS")


@dataclass
class RuleBundle:
    """TCTS_RULE: a rule, and the models it needs loaded with the generator (a selector)."""

    rule: Rule
    patchers: list[Any] = field(default_factory=list)


def rule_node(node_id: str, name: str, description: str, inputs: list, build) -> type[io.ComfyNode]:
    """A node class whose ``execute(**inputs)`` returns ``RuleBundle(build(**inputs))``."""
    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id=node_id, display_name=f"Rule: {name}", category=RULES_CATEGORY,
                             description=description, inputs=list(inputs), outputs=[RuleType.Output(display_name="rule")])

        @classmethod
        def execute(cls, **values) -> io.NodeOutput:
            return io.NodeOutput(build(**values))

    Node.__name__ = Node.__qualname__ = node_id
    return Node


def revocable(values: dict[str, Any]) -> RevocableOptions:
    return option_values(RevocableOptions, values)


def tcts_rule(model: GeneratorBundle, selector: SelectorBundle, values: dict[str, Any]) -> RuleBundle:
    options = selector_rule_options(selector, model, values)
    options = RuleOptions(selector=options.selector, selector_model=options.selector_model, revocable=revocable(values))
    return RuleBundle(make_rule("tcts", options), [selector.patcher])


def family_inputs(cls: type) -> list:
    """A family's inputs: its main options required, its ablation knobs optional (defaults when unlinked)."""
    return [*option_inputs(cls, advanced=False), *option_inputs(cls, advanced=True, optional=True)]


def fas_rule(inner: RuleBundle, q: float, options: FASOptions | None = None) -> RuleBundle:
    fas = option_values(FASOptions, {"q": q}, base=options or FASOptions())
    return RuleBundle(FAS(inner.rule, fas), list(inner.patchers))


PurityRule = rule_node("TCTSRulePurity", "Purity", "MaskGIT / aMUSEd confidence order (persistent): the reference "
                       "sampler.", [], lambda: RuleBundle(make_rule("purity")))
UniformRule = rule_node("TCTSRuleUniform", "Uniform", "A random order (persistent).", [],
                        lambda: RuleBundle(make_rule("uniform")))
RandomRevokeRule = rule_node(
    "TCTSRuleRandomRevoke", "Random Revoke", "A random kept set over all positions each step (revocable).",
    option_inputs(RevocableOptions),
    lambda **v: RuleBundle(make_rule("random-revoke", RuleOptions(revocable=revocable(v)))))
TCTSRule = rule_node(
    "TCTSRuleTCTS", "TCTS", "The learned text-conditioned token selector (revocable): keeps the tokens it trusts "
    "for the prompt, re-masks the rest. The selector must be trained for the model.",
    [ModelType.Input("model", tooltip="the generator the selector was trained for (checked)"),
     SelectorType.Input("selector", tooltip="from Load Token Selector"),
     *option_inputs(SelectorOptions, prefix="selector_"), *option_inputs(RevocableOptions)],
    lambda model, selector, **values: tcts_rule(model, selector, values))
HaltonRule = rule_node(
    "TCTSRuleHalton", "Halton", "A fixed low-discrepancy spatial order (persistent): tokens are unmasked in the "
    "order of the 2-D Halton sequence, whatever the model predicts (Besnier et al. 2025).", family_inputs(HaltonOptions),
    lambda **v: RuleBundle(make_rule("halton", RuleOptions(halton=option_values(HaltonOptions, v)))))
ReMDMRule = rule_node(
    "TCTSRuleReMDM", "ReMDM", "Re-masking (revocable): each step a scheduled share of the decoded tokens is masked "
    "again and redrawn, the least probable first (ReMDM, Wang et al. 2025).",
    [*family_inputs(ReMDMOptions), *option_inputs(RevocableOptions, optional=True)],
    lambda **v: RuleBundle(make_rule("remdm", RuleOptions(remdm=option_values(ReMDMOptions, v), revocable=revocable(v)))))
EntropyBoundedRule = rule_node(
    "TCTSRuleEntropyBounded", "Entropy-bounded", "Adaptive (persistent): each step commits the most certain tokens "
    "while their entropies stay within a budget, never fewer than the schedule; may finish before `steps` "
    "(EB-sampler, Ben-Hamu et al. 2025).", family_inputs(EntropyBoundedOptions),
    lambda **v: RuleBundle(make_rule("entropy-bounded",
                                     RuleOptions(entropy_bounded=option_values(EntropyBoundedOptions, v)))))
NoiseRegularizedRule = rule_node(
    "TCTSRuleNoiseRegularized", "Noise-regularized", "Purity with Gaussian noise on the logits that score which "
    "tokens are kept, strong on the first steps, none half-way (Shao et al. 2024); noise_scale 0 = Purity.",
    family_inputs(NoiseRegularizedOptions),
    lambda **v: RuleBundle(make_rule("noise-regularized",
                                     RuleOptions(noise_regularized=option_values(NoiseRegularizedOptions, v)))))
FASRule = rule_node(
    "TCTSRuleFAS", "FAS", "Frequency adaptive sampling around a revocable rule: self-attention splits the tokens; "
    "LOW-frequency tokens are kept persistently, HIGH-frequency ones by the inner rule.",
    [RuleType.Input("inner", tooltip="a revocable rule: Random Revoke, TCTS or ReMDM"), *option_inputs(FASOptions, advanced=False),
     FASOptionsType.Input("options", optional=True, tooltip="FAS Options: the ablation knobs")], fas_rule)


class FASOptionsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TCTSFASOptions", display_name="FAS Options (advanced)", category=RULES_CATEGORY,
                         description="The ablation knobs of FAS (statistic, cutoff, regrouping, …) for the FAS rule.",
                         inputs=option_inputs(FASOptions, advanced=True),
                         outputs=[FASOptionsType.Output(display_name="options")])

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(option_values(FASOptions, values))


class CustomSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSCustomSampler", display_name="Masked Sampler (Custom)", category=SAMPLERS_CATEGORY,
            description="Samples with the rule connected to `rule` (Rule: Purity / Uniform / Random Revoke / TCTS / "
                        "FAS / Halton / ReMDM / Entropy-bounded / Noise-regularized); the same inputs and the same "
                        "tokens as the per-strategy sampler nodes.",
            inputs=[RuleType.Input("rule", tooltip="a Rule node's output"), *common_inputs()],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, rule: RuleBundle, **inputs) -> io.NodeOutput:
        return io.NodeOutput(sample_tokens(rule.rule, SamplerInputs.of(inputs), rule.patchers))


NODES = [CustomSampler, PurityRule, UniformRule, RandomRevokeRule, TCTSRule, FASRule, FASOptionsNode, HaltonRule,
         ReMDMRule, EntropyBoundedRule, NoiseRegularizedRule]

"""The composable samplers in a real ComfyUI: a Rule node into *Masked Sampler (Custom)* gives exactly the
tokens of the per-strategy sampler node with the same settings, for every rule; FAS wraps only revocable rules;
its ablation knobs come from the *FAS Options* node."""
from __future__ import annotations

import pytest
import torch

from tests.comfy_prompts import txt2img

pytestmark = pytest.mark.comfyui

SELECTOR = "tiny-selector"


@pytest.fixture(scope="module")
def selector_folder(comfy, tmp_path_factory):
    from tcts.selector import SelectorConfig, TokenSelector, save_selector

    root = tmp_path_factory.mktemp("selectors")
    torch.manual_seed(0)
    save_selector(TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                               num_heads=2, max_grid=(16, 16))), root / SELECTOR)
    comfy.add_model_folder("tcts_selectors", root)
    return root


def custom(rule_nodes: dict, rule_id: str, **overrides) -> dict:
    """txt2img with the sampler node replaced by Masked Sampler (Custom) fed by ``rule_nodes``."""
    prompt = txt2img(**overrides)
    inputs = {k: v for k, v in prompt["3"]["inputs"].items() if k != "sampler"}
    prompt["3"] = {"class_type": "TCTSCustomSampler", "inputs": {**inputs, "rule": [rule_id, 0]}}
    prompt.update(rule_nodes)
    return prompt


def selector_nodes() -> dict:
    return {"20": {"class_type": "TCTSLoadSelector", "inputs": {"selector_name": SELECTOR, "dtype": "auto"}}}


def tokens(comfy, prompt) -> torch.Tensor:
    return comfy.run(prompt).output("3", 0).tokens


FAS_WIDGETS = {"statistic": "fft_hf", "q": 0.4, "cutoff": 0.5, "regroup": "every_step", "freeze_after": 0.25,
               "smooth": False, "invert": False, "low_scorer": "inner", "start_frac": 0.0, "layers": ""}
SELECTOR_WIDGETS = {"selector_guidance": 2.0, "selector_noise": 0.5, "selector_choice": "topk"}


PERSISTENT = ("purity", "uniform", "halton", "entropy-bounded", "noise-regularized")
#: the Rule nodes of the samplers added after the paper, with their options at the defaults
NEW_RULE_NODES = {
    "halton": {"class_type": "TCTSRuleHalton", "inputs": {"roll": False}},
    "remdm": {"class_type": "TCTSRuleReMDM", "inputs": {"variant": "cap", "eta": 0.05}},
    "entropy-bounded": {"class_type": "TCTSRuleEntropyBounded", "inputs": {"gamma": 1.0}},
    "noise-regularized": {"class_type": "TCTSRuleNoiseRegularized", "inputs": {"noise_scale": 1.0}},
}


def per_strategy(rule: str) -> dict:
    if rule in PERSISTENT:
        return txt2img(sampler=rule)
    if rule in ("random-revoke", "remdm"):
        return txt2img(sampler=rule, node="TCTSRevocableSampler", extra={"repredict_visible": False})
    if rule == "tcts":
        prompt = txt2img(sampler=None, node="TCTSSelectorSampler", extra={"selector": ["20", 0], **SELECTOR_WIDGETS})
    elif rule == "fas":
        prompt = txt2img(sampler=None, node="TCTSFASSampler", extra=FAS_WIDGETS)
    else:  # tcts-fas
        prompt = txt2img(sampler=None, node="TCTSFASSampler",
                         extra={**FAS_WIDGETS, "selector": ["20", 0], **SELECTOR_WIDGETS})
    prompt["3"]["inputs"].pop("sampler")
    prompt.update(selector_nodes())
    return prompt


def composable(rule: str) -> dict:
    nodes = {"purity": {"10": {"class_type": "TCTSRulePurity", "inputs": {}}},
             "uniform": {"10": {"class_type": "TCTSRuleUniform", "inputs": {}}},
             "random-revoke": {"10": {"class_type": "TCTSRuleRandomRevoke", "inputs": {"repredict_visible": False}}}}
    tcts = {"11": {"class_type": "TCTSRuleTCTS", "inputs": {"model": ["1", 0], "selector": ["20", 0],
                                                            "repredict_visible": False, **SELECTOR_WIDGETS}},
            **selector_nodes()}
    rr = {"11": {"class_type": "TCTSRuleRandomRevoke", "inputs": {"repredict_visible": False}}}
    knobs = {k: v for k, v in FAS_WIDGETS.items() if k != "q"}
    fas = {"10": {"class_type": "TCTSRuleFAS", "inputs": {"inner": ["11", 0], "q": 0.4, "options": ["12", 0]}},
           "12": {"class_type": "TCTSFASOptions", "inputs": knobs}}
    nodes["tcts"] = {"10": tcts["11"], **selector_nodes()}
    nodes["fas"] = {**fas, **rr}
    nodes["tcts-fas"] = {**fas, **tcts}
    nodes.update({name: {"10": node} for name, node in NEW_RULE_NODES.items()})
    return custom(nodes[rule], "10")


@pytest.mark.parametrize("rule", ["purity", "uniform", "random-revoke", "tcts", "fas", "tcts-fas", *NEW_RULE_NODES])
def test_the_custom_sampler_gives_the_tokens_of_the_per_strategy_node(comfy, selector_folder, rule):
    assert torch.equal(tokens(comfy, composable(rule)), tokens(comfy, per_strategy(rule)))


def test_the_defaults_of_the_new_rule_nodes_are_those_of_the_per_strategy_nodes(comfy, pack):
    from tcts.sampling.registry import RuleOptions

    defaults = RuleOptions()
    families = {"halton": defaults.halton, "remdm": defaults.remdm, "entropy-bounded": defaults.entropy_bounded,
                "noise-regularized": defaults.noise_regularized}
    for name, node in NEW_RULE_NODES.items():
        for key, value in node["inputs"].items():
            assert getattr(families[name], key) == value, (name, key)


def test_the_rule_nodes_pass_every_option_to_their_rule(comfy, pack):
    rules = pack("nodes.rules")
    remdm = rules.ReMDMRule.execute(variant="loop", eta=0.2, t_on=0.8, t_off=0.1, choice="random",
                                    repredict_visible=True).result[0].rule
    assert (remdm.options.variant, remdm.options.eta, remdm.options.t_on, remdm.options.t_off, remdm.options.choice,
            remdm.repredict_visible) == ("loop", 0.2, 0.8, 0.1, "random", True)
    assert rules.ReMDMRule.execute(variant="cap", eta=0.05).result[0].rule.options.t_on == 0.55  # unlinked: default
    assert rules.HaltonRule.execute(roll=True).result[0].rule.options.roll is True
    eb = rules.EntropyBoundedRule.execute(gamma=3.0, proxy="margin").result[0].rule.options
    assert (eb.gamma, eb.proxy) == (3.0, "margin")
    assert rules.NoiseRegularizedRule.execute(noise_scale=0.5).result[0].rule.options.noise_scale == 0.5


def test_fas_wraps_remdm(comfy):
    fas = {"10": {"class_type": "TCTSRuleFAS", "inputs": {"inner": ["11", 0], "q": 0.5}},
           "11": {"class_type": "TCTSRuleReMDM", "inputs": {"variant": "rescale", "eta": 0.3}}}
    result = comfy.run(custom(fas, "10")).output("3", 0)
    assert result.extras["sampler"] == "fas-remdm" and (result.tokens < 64).all()


def test_fas_wraps_only_a_revocable_rule(comfy):
    from tests.support.comfyui import PromptExecutionError

    prompt = custom({"10": {"class_type": "TCTSRuleFAS", "inputs": {"inner": ["11", 0], "q": 0.5}},
                     "11": {"class_type": "TCTSRulePurity", "inputs": {}}}, "10")
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    assert "FAS needs a revocable inner rule" in info.value.exception_message


def test_the_rule_nodes_sit_in_one_category_and_the_fas_rule_shows_no_ablation_knob(comfy, pack):
    info = {name: comfy.node_info(name) for name in ("TCTSRulePurity", "TCTSRuleFAS", "TCTSFASOptions",
                                                     "TCTSCustomSampler")}
    assert {i["category"] for i in info.values()} <= {"tcts/samplers/rules", "tcts/samplers"}
    fas_inputs = set(info["TCTSRuleFAS"]["input"]["required"]) | set(info["TCTSRuleFAS"]["input"].get("optional", {}))
    assert fas_inputs == {"inner", "q", "options"}
    assert "statistic" in info["TCTSFASOptions"]["input"]["required"]

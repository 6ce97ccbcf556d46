"""The TCTS nodes inside a real ComfyUI 0.3.75: Load Token Selector -> TCTS Sampler gives the engine's tokens."""
from __future__ import annotations

import shutil

import pytest
import torch

from tcts.pipeline import Pipeline
from tests.engine_helpers import cond_for as text_condition, tokens_for as generate_tokens
from tcts.selector import SelectorConfig, TokenSelector, load_selector, save_selector
from tests.support.comfyui import PromptExecutionError

from .helpers import AMUSED

ROOT = AMUSED.parents[2]

pytestmark = pytest.mark.comfyui

MODEL = "amused-tiny-sel"


def make_selector(text_width: int, seed: int) -> TokenSelector:
    torch.manual_seed(seed)
    selector = TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=text_width, hidden_size=32,
                                            num_layers=1, num_heads=2, max_grid=(16, 16)))
    for p in selector.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return selector


@pytest.fixture(scope="module")
def selectors(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcts-selectors")
    save_selector(make_selector(16, 0), root / "toy-selector")
    save_selector(make_selector(32, 1), root / "meissonic-selector")
    (root / "not-a-selector").mkdir()
    return root


@pytest.fixture(scope="module")
def comfy(comfyui, pack, selectors, tmp_path_factory):
    models = tmp_path_factory.mktemp("tcts-models-sel")
    shutil.copytree(AMUSED, models / MODEL)
    comfyui.add_model_folder("tcts", models)
    comfyui.add_model_folder("tcts_selectors", selectors)
    return comfyui


def tcts_prompt(selector="toy-selector", **overrides):
    settings = {"width": 64, "height": 64, "batch_size": 2, "steps": 5, "cfg": 10.0, "seed": 3, "schedule": "cosine",
                "choice_temperature": 2.0, "temperature": 1.0, "preview": "colours", "selector_guidance": 2.0,
                "selector_noise": 0.5, "selector_choice": "multinomial"}
    return {
        "1": {"class_type": "TCTSLoadModel", "inputs": {"model_name": MODEL, "dtype": "auto"}},
        "2": {"class_type": "TCTSTextEncode", "inputs": {"clip": ["1", 2], "prompt": "a red square", "negative": ""}},
        "3": {"class_type": "TCTSLoadSelector", "inputs": {"selector_name": selector, "dtype": "auto"}},
        "4": {"class_type": "TCTSSelectorSampler",
              "inputs": {"selector": ["3", 0], "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1],
                         **{**settings, **overrides}}},
        "5": {"class_type": "TCTSVQDecode", "inputs": {"vq": ["1", 1], "tokens": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "tcts-selector"}},
    }


def test_the_selector_nodes_are_registered_and_list_selector_folders(comfy):
    info = comfy.object_info()
    for node_id in ("TCTSLoadSelector", "TCTSSelectorSampler"):
        assert info[node_id]["category"].split("/")[0] == "tcts"
        assert info[node_id]["description"]
        comfy.node_class(node_id).GET_SCHEMA().validate()
        assert (ROOT / "web" / "docs" / f"{node_id}.md").is_file()
    spec = info["TCTSLoadSelector"]["input"]["required"]["selector_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {"toy-selector", "meissonic-selector"} <= set(options) and "not-a-selector" not in options
    sampler_inputs = info["TCTSSelectorSampler"]["input"]["required"]
    assert {"selector", "selector_guidance", "selector_noise", "selector_choice", "model", "positive", "steps",
            "seed"} <= set(sampler_inputs)


def test_the_tcts_sampler_node_gives_the_engines_tokens(comfy, selectors):
    result = comfy.run(tcts_prompt())
    tokens = result.output("4", 0).tokens
    assert tokens.shape == (2, 4, 4)
    assert result.output("5", 0).shape == (2, 64, 64, 3)
    pipe = Pipeline.from_folder(AMUSED)
    cond = text_condition(pipe.encode_prompts(["a red square"]), pipe.encode_prompts([""]), 64, 64, 2)
    options = {"selector": load_selector(selectors / "toy-selector", pipe.transformer), "guidance": 2.0,
               "noise": 0.5, "choice": "multinomial"}
    expected = generate_tokens(pipe.transformer, cond, sampler="tcts", steps=5, cfg=10.0, seed=3, grid=(4, 4),
                               rule_options=options)
    assert torch.equal(tokens.cpu(), expected)


@pytest.mark.parametrize("selector,message", [
    ("meissonic-selector", "reads text states of width 32 but the generator's text encoder gives width 16"),
    ("../../etc", "is not among the installed selectors"),
])
def test_a_wrong_selector_fails_the_node_with_a_clear_message(comfy, selector, message):
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(tcts_prompt(selector=selector))
    assert message in info.value.exception_message

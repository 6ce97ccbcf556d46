"""TCTS + FAS Sampler, Attention Maps and Mask-free Edit inside a real ComfyUI, against the engine (the
mask-free edit workflow runs in the browser journey, tests/test_user_journey.py)."""
from __future__ import annotations

import shutil

import pytest
import torch

from tcts.attention import attention_maps, token_pieces, word_columns
from tcts.editing import RegionOptions
from tests.engine_helpers import edit
from tcts.engine import make_generators
from tcts.pipeline import Pipeline
from tests.engine_helpers import cond_for as text_condition
from tcts.selector import SelectorConfig, TokenSelector, save_selector
from tests.comfy_prompts import MODEL, txt2img
from tests.conftest import ROOT
from tests.helpers import AMUSED
from tests.support.comfyui import PromptExecutionError
from tests.engine_helpers import generate

pytestmark = pytest.mark.comfyui

FAS = {"statistic": "fft_hf", "q": 0.5, "cutoff": 0.5, "regroup": "every_step", "freeze_after": 0.25,
       "smooth": False, "invert": False, "low_scorer": "inner", "start_frac": 0.0, "layers": ""}
SOURCE, TARGET = "a photo of a red cat", "a photo of a blue bird"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcts-attn-models")
    shutil.copytree(AMUSED, root / "tcts" / MODEL)
    torch.manual_seed(0)
    selector = TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                            num_heads=2, max_grid=(16, 16)))
    save_selector(selector, root / "tcts_selectors" / "tiny-selector")
    return root


@pytest.fixture(scope="module")
def comfy(comfyui, pack, models):
    comfyui.add_model_folder("tcts", models / "tcts")
    comfyui.add_model_folder("tcts_selectors", models / "tcts_selectors")
    return comfyui


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def test_the_nodes_are_registered_with_docs(comfy):
    info = comfy.object_info()
    for node_id in ("TCTSFASSampler", "TCTSAttentionMaps", "TCTSMaskFreeEdit"):
        assert info[node_id]["category"].split("/")[0] == "tcts" and info[node_id]["description"]
        comfy.node_class(node_id).GET_SCHEMA().validate()
        assert (ROOT / "web" / "docs" / f"{node_id}.md").is_file()
    assert info["TCTSFASSampler"]["display_name"] == "TCTS + FAS Sampler"
    assert "selector" in info["TCTSFASSampler"]["input"]["optional"]
    assert info["TCTSFASSampler"]["input"]["optional"]["selector"][0] == "TCTS_SELECTOR"


def fas_prompt(**overrides):
    prompt = txt2img(node="TCTSFASSampler", extra=FAS, width=64, height=64, **overrides)
    del prompt["3"]["inputs"]["sampler"]
    return prompt


def test_fas_sampler_node_equals_the_engine(comfy, pipe):
    result = comfy.run(fas_prompt())
    tokens = result.output("3", 0).tokens
    ref = generate(pipe, SOURCE, sampler="fas", steps=4, cfg=10.0, seed=0, width=64, height=64)
    assert torch.equal(tokens, ref.tokens)
    assert result.output("4", 0).shape == (1, 64, 64, 3)


def test_fas_sampler_node_with_a_selector_runs_tcts_fas(comfy, pipe, models):
    prompt = fas_prompt()
    prompt["6"] = {"class_type": "TCTSLoadSelector", "inputs": {"selector_name": "tiny-selector", "dtype": "fp32"}}
    prompt["3"]["inputs"].update(selector=["6", 0], selector_noise=0.5)
    tokens = comfy.run(prompt).output("3", 0).tokens
    from tcts.selector import load_selector

    selector = load_selector(models / "tcts_selectors" / "tiny-selector", pipe.transformer)
    ref = generate(pipe, SOURCE, sampler="tcts-fas", steps=4, cfg=10.0, seed=0, width=64, height=64,
                        rule_options={"selector": selector, "noise": 0.5})
    assert torch.equal(tokens, ref.tokens)


def maps_prompt(word="cat", prompt_text=SOURCE):
    prompt = txt2img(prompt=prompt_text, width=64, height=64)
    prompt["6"] = {"class_type": "TCTSAttentionMaps",
                   "inputs": {"model": ["1", 0], "positive": ["2", 0], "tokens": ["3", 0], "word": word,
                              "statistic": "fft_hf", "q": 0.5, "cutoff": 0.5, "smooth": False, "self_layers": "",
                              "cross_layers": "", "image": ["4", 0]}}
    prompt["7"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 1], "filename_prefix": "tcts_word"}}
    prompt["8"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 3], "filename_prefix": "tcts_low"}}
    return prompt


def test_attention_maps_node_returns_masks_and_overlays(comfy, pipe):
    result = comfy.run(maps_prompt())
    tokens = result.output("3", 0).tokens
    word_mask, word_overlay, low_mask, low_overlay = (result.output("6", i) for i in range(4))
    assert word_mask.shape == low_mask.shape == (1, 64, 64)
    assert word_overlay.shape == low_overlay.shape == (1, 64, 64, 3)
    assert set(low_mask.unique().tolist()) == {0.0, 1.0} and low_mask.mean() == 0.5
    positive = pipe.encode_prompts([SOURCE])
    columns = word_columns("cat", token_pieces(pipe.text_encoder.tokenizer, positive.token_ids[0]))
    ref = attention_maps(pipe.transformer, tokens, text_condition(positive, None, 64, 64, 1), columns=columns)
    assert torch.allclose(word_mask[:, ::16, ::16], ref.word, atol=1e-5)
    assert torch.equal(low_mask[:, ::16, ::16].bool(), ref.low_frequency)
    assert 0 <= word_overlay.min() and word_overlay.max() <= 1


def test_attention_maps_node_names_a_missing_word_and_foreign_conditioning(comfy):
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(maps_prompt(word="dog"))
    assert "'dog' is not in the prompt 'a photo of a red cat'; its words are: a, photo, of, red, cat" \
        in info.value.exception_message
    prompt = maps_prompt()
    prompt["10"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 2], "text": SOURCE}}
    prompt["6"]["inputs"]["positive"] = ["10", 0]
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    assert "encode it with Masked Generative Text Encode" in info.value.exception_message


def edit_prompt(comfy, word="cat", **overrides):
    shutil.copy(AMUSED / "inputs" / "image_256x256.png", comfy.input_dir / "tcts_edit_src.png")
    inputs = {"model": ["1", 0], "source_tokens": ["9", 0], "source": ["2", 0], "target": ["5", 0],
              "negative": ["5", 1], "word": word, "strategy": "auto", "steps": 4, "cfg": 10.0, "seed": 0,
              "schedule": "linear", "choice_temperature": 2.0, "temperature": 1.0, "threshold": "mean_std", "k": 0.0,
              "top_q": 0.2, "blur": True, "dilate": 0, "region_layers": "", "preview": "colours",
              "select": "contrast", "contrast_samples": 8, **overrides}
    return {
        "1": {"class_type": "TCTSLoadModel", "inputs": {"model_name": MODEL, "dtype": "auto"}},
        "2": {"class_type": "TCTSTextEncode", "inputs": {"clip": ["1", 2], "prompt": SOURCE, "negative": ""}},
        "5": {"class_type": "TCTSTextEncode", "inputs": {"clip": ["1", 2], "prompt": TARGET, "negative": ""}},
        "8": {"class_type": "LoadImage", "inputs": {"image": "tcts_edit_src.png"}},
        "9": {"class_type": "TCTSVQEncode", "inputs": {"vq": ["1", 1], "image": ["8", 0]}},
        "3": {"class_type": "TCTSMaskFreeEdit", "inputs": inputs},
        "4": {"class_type": "TCTSVQDecode", "inputs": {"vq": ["1", 1], "tokens": ["3", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "tcts_edit"}},
    }


def test_mask_free_edit_node_keeps_the_outside_and_equals_the_engine(comfy, pipe):
    result = comfy.run(edit_prompt(comfy))
    source = result.output("9", 0).tokens
    edited = result.output("3", 0).tokens
    region = result.output("3", 1)
    assert region.shape == (1, 256, 256) and set(region.unique().tolist()) == {0.0, 1.0}
    inside = region[:, ::16, ::16].bool()
    assert torch.equal(region, inside.float().repeat_interleave(16, 1).repeat_interleave(16, 2))  # token-aligned
    assert torch.equal(edited[~inside], source[~inside]) and inside.any()
    assert result.output("4", 0).shape == (1, 256, 256, 3)
    src, tgt, neg = (pipe.encode_prompts([p]) for p in (SOURCE, TARGET, ""))
    columns = word_columns("cat", token_pieces(pipe.text_encoder.tokenizer, src.token_ids[0]))
    ref = edit(pipe.transformer, source, text_condition(src, None, 256, 256, 1),
                         text_condition(tgt, neg, 256, 256, 1), columns, generators=make_generators(0, 1), steps=4,
                         cfg=10.0, schedule="linear", region=RegionOptions())
    assert torch.equal(ref.tokens, edited) and torch.equal(ref.region, inside)


def test_mask_free_edit_node_errors(comfy):
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(edit_prompt(comfy, word="zebra"))
    assert "'zebra' is not in the prompt 'a photo of a red cat'" in info.value.exception_message
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(edit_prompt(comfy, strategy="tcts"))
    assert "needs a TokenSelector" in info.value.exception_message or "selector" in info.value.exception_message

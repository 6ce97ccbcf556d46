"""The tiny Meissonic runs through every sampler — tcts, fas and tcts-fas included — in the CLI and in a
real ComfyUI, unchanged (issue: Meissonic works with everything)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tcts.selector import SelectorConfig, TokenSelector
from tcts.selector.model import save_selector
from tests.comfy_prompts import txt2img
from tests.helpers import MEISSONIC
from tests.test_comfy_attention import FAS

ROOT = MEISSONIC.parents[2]


@pytest.fixture(scope="module")
def selector_root(tmp_path_factory):
    """A random selector for the tiny Meissonic (64 codes, text width 32): enough to run the rules."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("meissonic-selectors")
    save_selector(TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=32, hidden_size=32, num_layers=1,
                                               num_heads=2, max_grid=(64, 64))), root / "meissonic-tiny-selector")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tcts", "fas", "tcts-fas"])
def test_tiny_meissonic_runs_the_learned_and_frequency_samplers_from_the_command_line(tmp_path, selector_root,
                                                                                    sampler):
    args = ["generate", "--model", MEISSONIC, "--prompt", "a photo of a red cat", "--sampler", sampler,
            "--steps", 3, "--cfg", 9, "--width", 64, "--height", 1024, "--out", tmp_path / "m.png",
            "--tokens-out", tmp_path / "m.npy"]
    if sampler != "fas":
        args += ["--selector", selector_root / "meissonic-tiny-selector"]
    proc = subprocess.run([sys.executable, "-m", "tcts", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    tokens = np.load(tmp_path / "m.npy")
    assert tokens.shape == (64, 4) and tokens.max() < 64


def engine_tokens(sampler, selector_root=None, **options):
    """What the engine draws for the node prompts below (same prompt, size, steps, cfg, seed)."""
    from tcts.pipeline import Pipeline
    from tcts.selector import load_selector
    from tests.engine_helpers import generate

    if selector_root is not None:
        options["selector"] = load_selector(selector_root / "meissonic-tiny-selector")
    return generate(Pipeline.from_folder(MEISSONIC), "a photo of a red cat", sampler=sampler, steps=3, cfg=9.0,
                    width=64, height=1024, schedule="cosine", choice_temperature=(2.0, 0.0), sampling_temperature=1.0,
                    rule_options=options).tokens


@pytest.mark.comfyui
@pytest.mark.parametrize("with_selector", [False, True])
def test_tiny_meissonic_fas_node_draws_what_the_engine_draws(comfy, selector_root, with_selector):
    comfy.add_model_folder("tcts_selectors", selector_root)
    prompt = txt2img(node="TCTSFASSampler", extra=FAS, model="meissonic-tiny", width=64, height=1024, steps=3,
                     cfg=9.0)
    del prompt["3"]["inputs"]["sampler"]
    if with_selector:
        prompt["6"] = {"class_type": "TCTSLoadSelector",
                       "inputs": {"selector_name": "meissonic-tiny-selector", "dtype": "auto"}}
        prompt["3"]["inputs"]["selector"] = ["6", 0]
    expected = engine_tokens("tcts-fas" if with_selector else "fas", selector_root if with_selector else None, **FAS)
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, expected)


@pytest.mark.comfyui
def test_tiny_meissonic_tcts_node_draws_what_the_engine_draws(comfy, selector_root):
    comfy.add_model_folder("tcts_selectors", selector_root)
    prompt = txt2img(node="TCTSSelectorSampler", model="meissonic-tiny", width=64, height=1024, steps=3, cfg=9.0,
                     extra={"selector": ["6", 0], "selector_guidance": 1.0, "selector_noise": 0.0,
                            "selector_choice": "topk"})
    del prompt["3"]["inputs"]["sampler"]
    prompt["6"] = {"class_type": "TCTSLoadSelector",
                   "inputs": {"selector_name": "meissonic-tiny-selector", "dtype": "auto"}}
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, engine_tokens("tcts", selector_root))

"""The TCTS token selector as a model: what it reads, what it outputs, how it is saved and refused.

A selector reads a fully predicted token map, the prompt's text states and the sampling progress, and gives
per token P(changed). It is saved as a folder (config.json + model.safetensors) and only loads, strictly,
next to a generator with the same codebook size and text width.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tcts.checkpoints import CheckpointError, load_transformer
from tcts.selector import (SelectorConfig, SelectorMismatchError, TokenSelector, load_selector, parameter_count,
                           save_selector)

from .helpers import AMUSED, MEISSONIC


def tiny_selector(codebook=64, text=16, **overrides) -> TokenSelector:
    torch.manual_seed(0)
    config = dict(codebook_size=codebook, text_hidden_size=text, hidden_size=32, num_layers=2, num_heads=4,
                  max_grid=(16, 16))
    return TokenSelector(SelectorConfig(**{**config, **overrides}))


@pytest.fixture(scope="module")
def amused():
    return load_transformer(AMUSED / "transformer")


def inputs(batch=2, grid=(4, 6), text=16, codebook=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, codebook, (batch, *grid), generator=g), torch.randn(batch, 77, text, generator=g),
            torch.tensor([0.25, 0.75][:batch]))


def test_it_gives_one_probability_of_changed_per_token():
    selector = tiny_selector().eval()
    tokens, text, t = inputs()
    logits = selector(tokens, text, t)
    assert logits.shape == (2, 4, 6)
    p = selector.prob_changed(tokens, text, t)
    assert torch.allclose(p, logits.sigmoid())
    assert ((p >= 0) & (p <= 1)).all()


def test_it_reads_the_text_and_the_progress_time():
    selector = tiny_selector()
    for p in selector.parameters():   # make the AdaLN modulation (zero at init) do something
        torch.nn.init.normal_(p, std=0.3)
    tokens, text, t = inputs(batch=1)
    base = selector(tokens, text, 0.3)
    assert not torch.allclose(base, selector(tokens, text * -1, 0.3))
    assert not torch.allclose(base, selector(tokens, text, 0.9))
    assert torch.allclose(base, selector(tokens, text, torch.tensor([0.3])))


def test_caption_dropout_swaps_in_the_learned_null_prompt():
    selector = tiny_selector().eval()
    tokens, text, t = inputs()
    dropped = selector(tokens, text, t, drop_text=torch.tensor([True, False]))
    with_null = selector(tokens, torch.stack([selector.null_text, text[1]]), t)
    assert torch.allclose(dropped, with_null, atol=1e-6)


def test_selector_guidance_is_null_plus_w_times_cond_minus_null():
    selector = tiny_selector().eval()
    tokens, text, t = inputs()
    cond = selector.prob_changed(tokens, text, t)
    null = selector.prob_changed(tokens, selector.null_text_states(2), t)
    guided = selector.prob_changed(tokens, text, t, guidance=3.0)
    assert torch.allclose(guided, null + 3.0 * (cond - null), atol=1e-6)
    assert torch.allclose(selector.prob_changed(tokens, text, t, guidance=1.0), cond)


def test_a_saved_selector_loads_back_identical(tmp_path, amused):
    selector = tiny_selector().eval()
    folder = save_selector(selector, tmp_path / "sel")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "TCTSTokenSelector"
    assert (config["codebook_size"], config["text_hidden_size"], config["max_grid"]) == (64, 16, [16, 16])
    loaded = load_selector(folder, amused)
    tokens, text, t = inputs()
    assert torch.equal(loaded(tokens, text, t), selector(tokens, text, t))
    assert loaded.config == selector.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(load_selector(folder / "model.safetensors")(tokens, text, t), selector(tokens, text, t))


def test_a_selector_for_another_codebook_is_refused_naming_both_sizes(tmp_path, amused):
    folder = save_selector(tiny_selector(codebook=8192), tmp_path / "big")
    with pytest.raises(SelectorMismatchError, match=r"8192-code VQ codebook but the generator predicts 64 codes"):
        load_selector(folder, amused)


def test_a_selector_for_another_text_encoder_is_refused_naming_both_widths(tmp_path, amused):
    folder = save_selector(tiny_selector(text=32), tmp_path / "meissonic-sel")
    with pytest.raises(SelectorMismatchError, match=r"width 32 but the generator's text encoder gives width 16"):
        load_selector(folder, amused)
    meissonic = load_transformer(MEISSONIC / "transformer")
    assert load_selector(folder, meissonic).text_hidden_size == 32   # the right generator takes it


def test_loading_is_strict_and_safetensors_only(tmp_path):
    folder = save_selector(tiny_selector(), tmp_path / "sel")
    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "extra.weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        load_selector(folder)
    save_file({k: v for k, v in state.items() if k != "head.bias"}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys: head.bias"):
        load_selector(folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match=r"no model.safetensors .*pickle files are never loaded"):
        load_selector(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_selector(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "UVit2DModel"}))
    save_file(state, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="is not a TCTS selector config"):
        load_selector(tmp_path / "other")


def test_bad_inputs_get_clear_errors():
    selector = tiny_selector()
    tokens, text, t = inputs()
    with pytest.raises(ValueError, match="larger than the selector's position table 16x16"):
        selector(torch.zeros(1, 17, 4, dtype=torch.long), text[:1], 0.5)
    with pytest.raises(ValueError, match=r"codebook ids in \[0, 64\)"):
        selector(torch.full((2, 4, 6), 71), text, t)   # a mask id is not a predicted token
    with pytest.raises(SelectorMismatchError, match="text states are 32 wide"):
        selector(tokens, torch.zeros(2, 77, 32), t)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=30, num_heads=4)


def test_size_is_configurable():
    small, large = tiny_selector(num_layers=1), tiny_selector(num_layers=4, hidden_size=64)
    assert parameter_count(large) > 4 * parameter_count(small)

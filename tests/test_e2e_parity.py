"""End-to-end runs reproduce the reference aMUSEd pipelines token for token (same seed, torch 2.13)."""
import numpy as np
import pytest
import torch

from tcts.images import load_image, load_mask, mask_to_token_grid
from tcts.pipeline import Pipeline, encode_images
from tcts.sampling.step import Conditioning
from tests.engine_helpers import loop as sample, rule as make_rule

from .helpers import AMUSED, load_case
from tests.engine_helpers import generate


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def run_and_record(pipe, **kwargs):
    steps = []
    result = generate(pipe, callback=lambda r: steps.append(r.tokens.clone()), **kwargs)
    return result, torch.stack(steps)


def assert_matches(result, steps, name):
    ref = load_case(AMUSED / "e2e" / f"{name}.safetensors")
    assert torch.equal(steps[:, :1], ref["step_output_tokens"])
    assert torch.equal(result.tokens, ref["final_tokens"])
    image = np.load(AMUSED / "e2e" / f"{name}.image.npy")
    assert np.abs(result.images.numpy() - image).max() <= 1e-4


def test_text_to_image_matches_reference_every_step(pipe):
    result, steps = run_and_record(pipe, prompt="a photo of a red cat", height=128, width=96, steps=4,
                                   cfg=10.0, seed=0)
    assert_matches(result, steps, "t2i_128x96")


def test_text_to_image_without_downsampling_on_an_odd_grid_matches_reference():
    pipe = Pipeline.from_folder(AMUSED)
    from tcts.checkpoints import load_transformer

    pipe.transformer = load_transformer(AMUSED / "transformer_nodown")
    result, steps = run_and_record(pipe, prompt="a painting of a small bird with a hat",
                                   negative_prompt="low quality, blurry", height=80, width=112, steps=4, seed=0)
    assert_matches(result, steps, "t2i_nodown_80x112")


def test_img2img_matches_reference_including_the_noise_draw(pipe):
    result, steps = run_and_record(pipe, prompt="a photo of a blue bird", steps=4, seed=0, strength=0.5,
                                   init_image=load_image(AMUSED / "inputs" / "image_128x96.png"))
    assert len(steps) == 2
    assert_matches(result, steps, "img2img_128x96_s05")


def test_inpaint_matches_reference_with_its_linear_schedule(pipe):
    result, steps = run_and_record(pipe, prompt="a photo of a red cat", steps=4, seed=0,
                                   init_image=load_image(AMUSED / "inputs" / "image_256x256.png"),
                                   mask=load_mask(AMUSED / "inputs" / "mask_256x256.png"))
    assert result.settings["schedule"] == "linear"
    assert_matches(result, steps, "inpaint_256x256")


def test_inpaint_mask_and_encoded_tokens_match_reference(pipe):
    ref = load_case(AMUSED / "e2e" / "inpaint_256x256.safetensors")
    assert torch.equal(mask_to_token_grid(load_mask(AMUSED / "inputs" / "mask_256x256.png"), (16, 16)),
                       ref["token_mask"])
    assert torch.equal(encode_images(pipe.vq, load_image(AMUSED / "inputs" / "image_256x256.png")),
                       ref["encoded_tokens"])


def test_loop_alone_reproduces_reference_from_stored_text_states(pipe):
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    hidden, pooled = ref["encoder_hidden_states"], ref["pooled_text_emb"]
    cond = Conditioning(hidden[1:], pooled[1:], ref["micro_conds"][1:], hidden[:1], pooled[:1])
    with torch.no_grad():
        tokens = sample(pipe.transformer, cond, make_rule("purity"), steps=4, grid=(8, 6),
                        generators=[torch.Generator().manual_seed(0)])
    assert torch.equal(tokens, ref["final_tokens"])


def test_text_encoder_reproduces_reference_ids_and_states(pipe):
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    cond = pipe.encode_prompts(["", "a photo of a red cat"])
    assert torch.equal(cond.token_ids[1], ref["prompt_input_ids"][0])
    assert torch.equal(cond.token_ids[0], ref["negative_input_ids"][0])
    assert cond.token_ids[1, :8].tolist() == [576, 353, 515, 516, 353, 518, 520, 577]
    assert (cond.hidden_states - ref["encoder_hidden_states"]).abs().max() <= 1e-5
    assert (cond.pooled - ref["pooled_text_emb"]).abs().max() <= 1e-5

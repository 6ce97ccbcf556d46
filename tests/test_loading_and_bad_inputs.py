"""Checkpoint forms load (single files, fp16 variants, no down-sampling, an empty prompt).

Wrong, unsafe or broken inputs are rows of the bad-input catalogue (test_bad_input_catalogue.py)."""
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tcts.checkpoints import load_text_encoder, load_transformer, load_vq, read_safetensors
from tcts.pipeline import Pipeline
from tests.engine_helpers import generate

from .helpers import AMUSED, MEISSONIC, config


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def test_single_files_load_with_detected_family_and_config(tmp_path):
    transformer = load_transformer(AMUSED / "transformer", dtype=torch.float32)
    vq = load_vq(AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors", norm_num_groups=4)
    text = load_text_encoder(AMUSED / "text_encoder" / "model.safetensors", AMUSED / "tokenizer")
    assert vq.codebook_size == transformer.codebook_size == 64
    assert text.hidden_size == 16 and text.projection_dim == 24
    meissonic = load_transformer(MEISSONIC / "transformer" / "diffusion_pytorch_model.safetensors",
                                 config=config(MEISSONIC / "transformer"))
    assert meissonic.family == "meissonic"


def test_fp16_variant_files_are_found_in_a_diffusers_folder(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    state = read_safetensors(AMUSED / "transformer" / "diffusion_pytorch_model.safetensors")
    save_file({k: v.half() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.fp16.safetensors"))
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    model = load_transformer(folder, dtype=torch.float16)
    assert model.dtype == torch.float16
    assert all(torch.equal(v, state[k].half()) for k, v in model.state_dict().items() if k in state)


@pytest.mark.parametrize("sequential", [False, True])
def test_a_half_precision_pipeline_keeps_no_fp32_text_encoder_but_decodes_in_fp32(sequential):
    """Like diffusers' ``torch_dtype``: the generator and the text encoder take the dtype; the VQ stays fp32."""
    half = Pipeline.from_folder(AMUSED, dtype=torch.bfloat16, sequential=sequential)
    assert half.component("transformer").dtype == torch.bfloat16
    assert {p.dtype for p in half.component("text_encoder").model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.component("vq").parameters()} == {torch.float32}
    result = half.generate("a red cat", seed=0)
    assert result.images.dtype == torch.float32 and torch.isfinite(result.images).all()


def test_models_without_downsampling_draw_one_token_per_16_px(pipe):
    """A transformer without its 2x down-sampling block reads one token per VQ cell: 80x112 px is a 7x5 grid
    (sizes that are not multiples of 16 are a catalogue row)."""
    nodown = Pipeline(load_transformer(AMUSED / "transformer_nodown"), pipe.vq, pipe.text_encoder)
    result = generate(nodown, "a cat", width=80, height=112, steps=2)
    assert result.tokens.shape == (1, 7, 5) and result.images.shape == (1, 112, 80, 3)


def test_empty_prompt_is_allowed_as_the_unconditional_prompt(pipe):
    result = generate(pipe, "", width=64, height=64, steps=2)
    assert result.images.shape == (1, 64, 64, 3)
    assert 0 <= result.images.min() and result.images.max() <= 1



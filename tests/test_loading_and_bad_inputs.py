"""Checkpoint forms load; wrong, unsafe or broken inputs fail with errors that say what is expected."""
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tcts.checkpoints import CheckpointError, load_text_encoder, load_transformer, load_vq, read_safetensors
from tcts.pipeline import Pipeline
from tests.engine_helpers import generate

from .helpers import AMUSED, MEISSONIC, config


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_transformer(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        Pipeline.from_folder(tmp_path / "no-model")


def test_folder_without_model_index_is_not_a_model(tmp_path):
    with pytest.raises(CheckpointError, match="no model_index.json"):
        Pipeline.from_folder(tmp_path)


def test_truncated_safetensors_is_reported_as_broken(tmp_path):
    data = (AMUSED / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    broken = tmp_path / "cut.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(broken)


def test_empty_file_is_reported(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(CheckpointError, match="is empty"):
        read_safetensors(empty)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="pickle-based checkpoint.*only .safetensors"):
        read_safetensors(path)


def test_folder_with_only_a_pickle_transformer_says_so(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="found only pickle files"):
        load_transformer(folder)


def test_non_safetensors_bytes_with_the_right_suffix_are_rejected(tmp_path):
    fake = tmp_path / "fake.safetensors"
    fake.write_text("this is text, not tensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_safetensors(fake)


@pytest.mark.parametrize("source,loader,expected", [
    (AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors", load_transformer, "holds a VQ-GAN"),
    (AMUSED / "text_encoder" / "model.safetensors", load_transformer, "holds a CLIP text encoder"),
    (AMUSED / "transformer" / "diffusion_pytorch_model.safetensors", load_vq, "holds an aMUSEd transformer"),
])
def test_wrong_family_files_name_what_they_hold_and_what_was_expected(source, loader, expected):
    with pytest.raises(CheckpointError, match=expected):
        loader(source)


def test_meissonic_weights_under_an_amused_config_are_rejected(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    shutil.copy(MEISSONIC / "transformer" / "diffusion_pytorch_model.safetensors", folder)
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    with pytest.raises(CheckpointError, match="Meissonic transformer but its config describes UVit2DModel"):
        load_transformer(folder)


def test_unrecognised_state_dict_is_rejected(tmp_path):
    path = tmp_path / "random.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        load_transformer(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = read_safetensors(AMUSED / "transformer" / "diffusion_pytorch_model.safetensors")
    state.pop("mlm_layer.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    with pytest.raises(CheckpointError, match=r"missing keys: mlm_layer.conv1.weight; unexpected keys: extra.weight"):
        load_transformer(folder)


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


@pytest.mark.parametrize("width,height,multiple", [(100, 128, 32), (96, 112, 32), (0, 64, 32), (-32, 64, 32)])
def test_sizes_must_be_multiples_of_the_token_stride(pipe, width, height, multiple):
    with pytest.raises(ValueError, match=f"must be a positive multiple of {multiple} px"):
        generate(pipe, "a cat", width=width, height=height, steps=2)


def test_models_without_downsampling_take_multiples_of_16(pipe):
    nodown = Pipeline(load_transformer(AMUSED / "transformer_nodown"), pipe.vq, pipe.text_encoder)
    assert generate(nodown, "a cat", width=80, height=112, steps=2).tokens.shape == (1, 7, 5)
    with pytest.raises(ValueError, match="multiple of 16 px"):
        generate(nodown, "a cat", width=72, height=112, steps=2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=-3), "steps must be an integer >= 1"),
    (dict(cfg=-1.0), "cfg must be a finite number >= 0"),
    (dict(cfg=float("nan")), "cfg must be a finite number >= 0"),
    (dict(cfg=float("inf")), "cfg must be a finite number >= 0"),
    (dict(sampling_temperature=0.0), "sampling temperature must be a finite number > 0"),
    (dict(choice_temperature=(-1.0, 0.0)), "choice temperature must be finite and >= 0"),
    (dict(batch_size=0), "batch size must be >= 1"),
    (dict(sampler="best"), "sampler 'best' is unknown"),
])
def test_bad_sampling_settings_are_clear_errors(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, "a cat", width=64, height=64, **{"steps": 2, **kwargs})


def test_empty_prompt_is_allowed_as_the_unconditional_prompt(pipe):
    result = generate(pipe, "", width=64, height=64, steps=2)
    assert result.images.shape == (1, 64, 64, 3)
    assert 0 <= result.images.min() and result.images.max() <= 1


def test_out_of_range_start_tokens_are_rejected(pipe):
    from tests.engine_helpers import cond_for as text_condition, tokens_for as generate_tokens

    cond = text_condition(pipe.encode_prompts(["a"]), None, 64, 64, 1)
    bad = torch.full((1, 4, 4), 64)
    with pytest.raises(ValueError, match=r"start tokens must be codebook ids in \[0, 64\) or the mask id 71"):
        generate_tokens(pipe.transformer, cond, tokens=bad, steps=2, cfg=1.0)


def test_nan_logits_are_detected_instead_of_a_black_image(pipe):
    from tests.engine_helpers import cond_for as text_condition, tokens_for as generate_tokens
    from tcts.sampling.step import NonFiniteLogitsError

    broken = load_transformer(AMUSED / "transformer")
    with torch.no_grad():
        broken.mlm_layer.conv2.weight.fill_(float("nan"))
    cond = text_condition(pipe.encode_prompts(["a"]), None, 64, 64, 1)
    with pytest.raises(NonFiniteLogitsError, match="NaN/inf logits at step 1/2"):
        generate_tokens(broken, cond, grid=(4, 4), steps=2, cfg=1.0)


def test_mismatched_components_are_rejected(pipe):
    from tcts.model_folder import check_compatible

    meissonic_text = load_text_encoder(MEISSONIC / "text_encoder", MEISSONIC / "tokenizer")
    with pytest.raises(CheckpointError, match="text encoder width 32 does not match"):
        check_compatible(pipe.transformer, pipe.vq, meissonic_text)


def test_inpaint_without_an_image_is_rejected(pipe):
    with pytest.raises(ValueError, match="a mask needs an init image"):
        generate(pipe, "a cat", width=64, height=64, steps=2, mask=torch.ones(1, 64, 64))

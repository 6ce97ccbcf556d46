"""The native aMUSEd transformer reproduces diffusers' UVit2DModel on the reference fixtures."""
import pytest
import torch

from tcts.checkpoints import load_transformer, uvit_config_from_state_dict
from tcts.models.uvit import UVit2DTransformer

from .helpers import AMUSED, config, load_case, read_keys

CASES = [("transformer", "a1_grid8x8_cfgdup"), ("transformer", "a2_grid4x12_nonsquare"),
         ("transformer", "a3_grid8x8_allmask_clip"), ("transformer_nodown", "b1_nodown_grid5x7_odd")]


def run_case(sub: str, case: str, dtype=torch.float32):
    model = load_transformer(AMUSED / sub, dtype=dtype)
    t = load_case(AMUSED / "cases" / f"{case}.safetensors")
    with torch.no_grad():
        logits = model(t["input_ids"], t["encoder_hidden_states"], t["pooled_text_emb"], t["micro_conds"])
    return logits, t


@pytest.mark.parametrize("sub,case", CASES)
def test_fp32_logits_match_reference_within_round_off(sub, case):
    logits, t = run_case(sub, case)
    assert logits.shape == t["logits"].shape
    assert (logits - t["logits"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case,dtype,atol", [("a4_bf16_of_a1", torch.bfloat16, 6e-2),
                                             ("a5_fp16_of_a1", torch.float16, 1e-2)])
def test_half_precision_logits_follow_the_reference_dtype_flow(case, dtype, atol):
    logits, t = run_case("transformer", case, dtype)
    assert logits.dtype == dtype
    assert (logits.float() - t["logits"].float()).abs().max().item() <= atol


def test_intermediate_module_outputs_match_reference():
    model = load_transformer(AMUSED / "transformer")
    t = load_case(AMUSED / "cases" / "a1_grid8x8_cfgdup.safetensors")
    ref = load_case(AMUSED / "cases" / "a1_grid8x8_cfgdup.intermediates.safetensors")
    seen = {}
    for name, module in model.named_modules():
        if f"out.{name}" in ref:
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        model(t["input_ids"], t["encoder_hidden_states"], t["pooled_text_emb"], t["micro_conds"])
    assert len(seen) == sum(k.startswith("out.") for k in ref)
    for name, out in seen.items():
        assert (out - ref[f"out.{name}"]).abs().max().item() <= 1e-5, name


@pytest.mark.parametrize("downsample,keys_file,params", [(False, "keys_transformer_256.txt", 603_537_664),
                                                         (True, "keys_transformer_512.txt", 608_257_792)])
def test_full_size_configs_have_the_released_parameter_counts_and_keys(downsample, keys_file, params):
    cfg = {"downsample": downsample, "upsample": downsample, "sample_size": 32 if downsample else 16}
    with torch.device("meta"):
        model = UVit2DTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == params
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == read_keys(keys_file)


def test_config_is_inferred_from_a_single_file_state_dict():
    from safetensors.torch import load_file

    state = load_file(str(AMUSED / "transformer" / "diffusion_pytorch_model.safetensors"))
    inferred = uvit_config_from_state_dict(state, micro_cond_encode_dim=8)
    expected = config(AMUSED / "transformer")
    for key in ("hidden_size", "cond_embed_dim", "encoder_hidden_size", "vocab_size", "codebook_size",
                "in_channels", "block_out_channels", "num_res_blocks", "downsample", "upsample",
                "num_hidden_layers", "intermediate_size", "micro_cond_embed_dim"):
        assert inferred[key] == expected[key], key


def test_real_size_config_is_inferred_from_keys_alone():
    state = {k: torch.empty(s, device="meta") for k, s in read_keys("keys_transformer_512.txt").items()}
    inferred = uvit_config_from_state_dict(state)
    assert inferred["hidden_size"] == 1024 and inferred["num_attention_heads"] == 16
    assert inferred["block_num_heads"] == 12 and inferred["cond_embed_dim"] == 768
    assert inferred["downsample"] and inferred["num_hidden_layers"] == 22 and inferred["num_res_blocks"] == 3
    with torch.device("meta"):
        assert sum(p.numel() for p in UVit2DTransformer(inferred).parameters()) == 608_257_792


def test_clip_l_text_encoder_has_the_released_parameter_count():
    from tcts.text import clip_config_from_state_dict

    keys = read_keys("keys_text_encoder.txt")
    cfg = clip_config_from_state_dict({k: torch.empty(s, device="meta") for k, s in keys.items()})
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device("meta"):
        model = CLIPTextModelWithProjection(CLIPTextConfig(**cfg))
    assert sum(p.numel() for p in model.parameters()) == 123_650_304
    assert cfg["num_attention_heads"] == 12 and cfg["hidden_act"] == "quick_gelu"


def test_text_key_value_cache_gives_identical_tokens_and_projects_the_text_once_per_run():
    from tcts.engine import make_generators
    from tcts.sampling.loop import Draws, LoopStart, run_loop, sample
    from tcts.sampling.registry import make_rule
    from tcts.sampling.step import Conditioning
    from tests.engine_helpers import sampling

    model = load_transformer(AMUSED / "transformer")
    ref = load_case(AMUSED / "cases" / "a3_grid8x8_allmask_clip.safetensors")
    hidden, pooled = ref["encoder_hidden_states"], ref["pooled_text_emb"]
    cond = Conditioning(hidden[1:], pooled[1:], ref["micro_conds"][1:], hidden[:1], pooled[:1])
    calls = []
    model.transformer_layers[0].attn2.to_k.register_forward_hook(lambda *a: calls.append(1))
    def start():
        return LoopStart(torch.full((1, 8, 8), model.mask_token_id))

    with torch.no_grad():
        uncached = run_loop(model, cond, make_rule("purity"), sampling(steps=5), start(), Draws(make_generators(0, 1)))
        assert len(calls) == 5
        cached = sample(model, cond, make_rule("purity"), sampling(steps=5), start(), Draws(make_generators(0, 1)))
    assert len(calls) == 6  # one projection of the text for the whole cached run
    assert torch.equal(cached, uncached)
    assert all(a.context_cache is None for a in model._cross_attentions())  # released after the run

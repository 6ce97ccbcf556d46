"""Attention capture (both families): outputs unchanged, shapes and memory, conditional rows, layers,
grids; the FAS statistic; word lookups."""
import pytest
import torch

from tcts.attention import (AttentionSite, attention_maps, attention_sites, capture_attention, default_layers,
                            frequency_statistic, low_frequency_groups, parse_layers, prompt_words, reencode_attention,
                            resolve_layers, word_columns, word_map)
from tcts.checkpoints import load_transformer
from tcts.models.meissonic import MEISSONIC_RELEASED_CONFIG, MeissonicTransformer
from tcts.models.uvit import UVit2DTransformer
from tcts.sampling.step import Conditioning
from tcts.text import load_tokenizer

from .helpers import AMUSED, MEISSONIC, load_case

MODELS = [(AMUSED, "transformer", "a1_grid8x8_cfgdup"), (AMUSED, "transformer_nodown", "b1_nodown_grid5x7_odd"),
          (MEISSONIC, "transformer", "c1_grid8x8_t3_cfgdup"), (MEISSONIC, "transformer_nodown", "n1_nodown_grid6x10_t5")]


def read_case(root, name):
    """A fixture case with the aMUSEd key names (the Meissonic cases use the reference's names)."""
    case = load_case(root / "cases" / f"{name}.safetensors")
    renames = {"hidden_states": "input_ids", "pooled_projections": "pooled_text_emb"}
    return {renames.get(k, k): v for k, v in case.items()}


def forward(model, case):
    args = (case["input_ids"], case["encoder_hidden_states"], case["pooled_text_emb"], case["micro_conds"])
    with torch.no_grad():
        return model(*args, case.get("timestep"))


@pytest.fixture(scope="module", params=MODELS, ids=lambda p: f"{p[0].name}/{p[1]}")
def setup(request):
    root, sub, case = request.param
    return load_transformer(root / sub), read_case(root, case)


def test_logits_are_bit_identical_with_capture_on_and_off(setup):
    model, case = setup
    plain = forward(model, case)
    for kinds in (("self",), ("cross",), ("self", "cross")):
        for batch in (None, 1):
            with capture_attention(model, layers="all", kinds=kinds, batch=batch) as acc:
                captured = forward(model, case)
            assert torch.equal(captured, plain), (kinds, batch)
            assert acc.result().forwards == 1
    assert torch.equal(forward(model, case), plain)


def test_capture_holds_one_averaged_buffer_per_kind_and_removes_its_hooks(setup):
    model, case = setup
    sites = attention_sites(model)
    b, h, w = case["input_ids"].shape
    m = model.token_grid_multiple
    grid = (-(-h // m), -(-w // m))
    n, text = grid[0] * grid[1], case["encoder_hidden_states"].shape[1]
    with capture_attention(model, layers="all", kinds=("self", "cross")) as acc:
        forward(model, case)
    assert set(acc.sums) == {"self", "cross"}
    assert acc.counts == {"self": len(sites), "cross": len(sites)}
    out = acc.result()
    assert out.self_attention.shape == (b, n, n) and out.cross_attention.shape == (b, n, text)
    assert out.grid == grid and out.token_grid == (h, w)
    assert torch.allclose(out.self_attention.sum(-1), torch.ones(b, n), atol=1e-5)  # rows are distributions
    cross_mass = out.cross_attention.sum(-1)
    if model.family == "amused":
        assert torch.allclose(cross_mass, torch.ones(b, n), atol=1e-5)
    else:  # the image->text share of a joint softmax
        assert (cross_mass > 0).all() and (cross_mass < 1).all()
    assert all(getattr(m_, "observer", None) is None for m_ in model.modules())
    assert not model._forward_pre_hooks


def test_only_the_conditional_rows_are_kept(setup):
    model, case = setup
    if case["input_ids"].shape[0] != 2:
        pytest.skip("case has no CFG batch")
    with capture_attention(model, kinds=("self", "cross"), batch=1) as acc:
        forward(model, case)
    positive = {k: v[1:] for k, v in case.items() if k in ("input_ids", "encoder_hidden_states", "pooled_text_emb",
                                                            "micro_conds")}
    alone = {**case, **positive}
    with capture_attention(model, kinds=("self", "cross")) as single:
        forward(model, alone)
    a, s = acc.result(), single.result()
    assert a.self_attention.shape[0] == 1
    assert torch.allclose(a.self_attention, s.self_attention, atol=1e-6)
    assert torch.allclose(a.cross_attention, s.cross_attention, atol=1e-6)


def test_captured_self_attention_is_the_head_mean_of_softmax_qk():
    model = load_transformer(AMUSED / "transformer_nodown")
    case = read_case(AMUSED, "b1_nodown_grid5x7_odd")
    seen = {}
    attn = model.transformer_layers[1].attn1
    hook = attn.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    with capture_attention(model, layers=[1], kinds="self") as acc:
        forward(model, case)
    hook.remove()
    x = seen["x"]
    q = attn.to_q(x).view(x.shape[0], x.shape[1], attn.heads, -1).transpose(1, 2)
    k = attn.to_k(x).view(x.shape[0], x.shape[1], attn.heads, -1).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1).mean(1)
    assert torch.allclose(acc.result().self_attention, expected, atol=1e-6)


def test_meissonic_blocks_are_the_renormalised_image_block_and_the_text_share_of_the_joint_softmax():
    model = load_transformer(MEISSONIC / "transformer")
    case = read_case(MEISSONIC, "c1_grid8x8_t3_cfgdup")
    attn = model.single_transformer_blocks[0].attn  # layer index num_layers + 0
    seen = []
    attn.observer = lambda q, k: seen.append((q, k))
    forward(model, case)
    attn.observer = None
    q, k = seen[0]
    text = case["encoder_hidden_states"].shape[1]
    joint = torch.softmax(q[1:, :, text:] @ k[1:].transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    block = joint[..., text:] / joint[..., text:].sum(-1, keepdim=True)
    index = len(model.transformer_blocks)
    with capture_attention(model, layers=[index], kinds=("self", "cross"), batch=1) as both:
        forward(model, case)
    with capture_attention(model, layers=[index], kinds="self", batch=1) as alone:
        forward(model, case)
    assert torch.allclose(both.result().self_attention, block.mean(1), atol=1e-6)
    assert torch.allclose(alone.result().self_attention, block.mean(1), atol=1e-6)
    assert torch.allclose(both.result().cross_attention, joint[..., :text].mean(1), atol=1e-6)


def test_downsampling_models_map_back_to_the_token_grid():
    model = load_transformer(AMUSED / "transformer")
    case = read_case(AMUSED, "a1_grid8x8_cfgdup")
    with capture_attention(model) as acc:
        forward(model, case)
    out = acc.result()
    assert out.grid == (4, 4) and out.token_grid == (8, 8)
    values = torch.arange(16.0).reshape(1, 16)
    up = out.to_token_grid(values)
    assert up.shape == (1, 8, 8)
    assert torch.equal(up[0, ::2, ::2], values.reshape(4, 4)) and torch.equal(up[0, 1::2, 1::2], values.reshape(4, 4))


def test_default_layers_are_the_first_two_thirds_on_the_released_architectures():
    with torch.device("meta"):
        amused = UVit2DTransformer({})
        meissonic = MeissonicTransformer(MEISSONIC_RELEASED_CONFIG)
    assert len(attention_sites(amused)) == 22 and len(attention_sites(meissonic)) == 42
    assert resolve_layers("self", None, 22) == list(range(15))
    assert resolve_layers("self", None, 42) == list(range(28))
    assert resolve_layers("cross", None, 22) == list(range(22))
    assert default_layers("self", 2) == [0]
    assert parse_layers("0-2, 5,-1") == [0, 1, 2, 5, -1] and resolve_layers("self", "0-2,5,-1", 8) == [0, 1, 2, 5, 7]
    with pytest.raises(ValueError, match="out of range: this model has 2 attention layers"):
        resolve_layers("self", [3], 2)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_layers("a-b")


def test_nested_capture_and_unknown_kinds_are_refused():
    model = load_transformer(AMUSED / "transformer")
    with pytest.raises(ValueError, match="attention kinds"):
        with capture_attention(model, kinds=("values",)):
            pass
    with capture_attention(model):
        with pytest.raises(RuntimeError, match="already active"):
            with capture_attention(model):
                pass
    assert all(getattr(m, "observer", None) is None for m in model.modules())
    with pytest.raises(ValueError, match="does not know where the attentions"):
        attention_sites(torch.nn.Linear(2, 2))
    assert isinstance(attention_sites(model)[0], AttentionSite)


# ---------------------------------------------------------------------------------------------
# FAS statistic
# ---------------------------------------------------------------------------------------------

def synthetic_attention(h=6, w=6):
    """Rows 0..n/2-1 diffuse (uniform: low frequency), the rest one-hot on themselves (high frequency)."""
    n = h * w
    a = torch.full((1, n, n), 1.0 / n)
    for i in range(n // 2, n):
        a[0, i] = 0
        a[0, i, i] = 1
    return a


@pytest.mark.parametrize("statistic", ["fft_hf", "entropy", "locality"])
def test_every_statistic_puts_diffuse_rows_in_the_low_group(statistic):
    a = synthetic_attention()
    score = frequency_statistic(a, (6, 6), statistic)
    low = low_frequency_groups(score, (6, 6), q=0.5)
    assert low.sum() == 18
    assert low[0, :18].all() and not low[0, 18:].any()


def test_fft_hf_is_zero_for_flat_rows_and_the_high_band_share_for_a_delta():
    a = synthetic_attention()
    hf = frequency_statistic(a, (6, 6), "fft_hf", cutoff=0.5)
    assert torch.allclose(hf[0, :18], torch.zeros(18), atol=1e-6)
    f = torch.fft.fftfreq(6)
    share = (torch.sqrt(f[:, None] ** 2 + f[None] ** 2) > 0.25).float().mean()
    assert torch.allclose(hf[0, 18:], share.expand(18), atol=1e-6)


def test_low_group_size_follows_q_exactly_even_for_ties():
    score = torch.zeros(2, 16)
    for q, count in ((0.0, 0), (0.25, 4), (0.5, 8), (1.0, 16)):
        assert (low_frequency_groups(score, (4, 4), q=q).sum(-1) == count).all()
    with pytest.raises(ValueError, match=r"q \(LOW quantile\) must be in \[0, 1\]"):
        low_frequency_groups(score, (4, 4), q=1.5)
    with pytest.raises(ValueError, match="statistic 'median' is unknown"):
        frequency_statistic(synthetic_attention(), (6, 6), "median")


# ---------------------------------------------------------------------------------------------
# words and maps
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(AMUSED / "tokenizer")


def pieces(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text, padding="max_length", max_length=77).input_ids)


def test_a_multi_piece_word_maps_to_all_its_columns(tokenizer):
    p = pieces(tokenizer, "a zebra on grass")
    assert p[2:7] == ["z", "e", "b", "r", "a</w>"]  # the tiny vocab splits zebra into 5 pieces
    assert word_columns("zebra", p) == [2, 3, 4, 5, 6]
    assert word_columns("Grass", p) == [8, 9, 10, 11]
    assert [w for w, _ in prompt_words(p)] == ["a", "zebra", "on", "grass"]


def test_phrases_repeats_and_punctuation(tokenizer):
    p = pieces(tokenizer, "a photo of a red cat!")
    assert word_columns("red cat", p) == [5, 6]
    assert word_columns("a", p) == [1, 4]  # every occurrence
    assert word_columns("cat", p) == [6]


def test_a_missing_word_names_the_prompt_and_its_words(tokenizer):
    p = pieces(tokenizer, "a photo of a red cat")
    with pytest.raises(ValueError) as info:
        word_columns("dog", p, "a photo of a red cat")
    message = str(info.value)
    assert "'dog' is not in the prompt 'a photo of a red cat'" in message
    assert "its words are: a, photo, of, red, cat" in message
    with pytest.raises(ValueError, match="no word given"):
        word_columns("  ", p)


def test_maps_of_a_generation_on_both_families():
    for root in (AMUSED, MEISSONIC):
        model = load_transformer(root / "transformer")
        case = read_case(root, "a3_grid8x8_allmask_clip" if root == AMUSED else "c3_grid8x8_allmask_t47_clip")
        cond = Conditioning(case["encoder_hidden_states"][1:], case["pooled_text_emb"][1:],
                            case["micro_conds"][1:])
        tokens = torch.randint(0, model.codebook_size, (1, 8, 8), generator=torch.Generator().manual_seed(0))
        maps = attention_maps(model, tokens, cond, columns=[5, 6])
        assert maps.word.shape == (1, 8, 8) and maps.low_frequency.shape == (1, 8, 8)
        assert maps.word.min() == 0 and maps.word.max() == 1
        assert maps.low_frequency.float().mean() == 0.5
        captured = reencode_attention(model, tokens, cond, kinds=("cross",))
        raw = word_map(captured, [5, 6])
        assert torch.allclose(raw, captured.cross_attention[..., [5, 6]].sum(-1).reshape(1, *captured.grid))

"""Mask-free editing (docs/method.md, Mask-free editing): the region from a word's cross-attention, tokens
outside it kept exactly, the schedule over |R|; ``python -m tcts edit`` and ``generate --attention-out`` end
to end."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tcts.attention import token_pieces, word_columns
from tcts.editing import RegionOptions, edit_region, region_from_map
from tcts.images import load_image
from tcts.engine import make_generators
from tcts.pipeline import Pipeline, encode_images
from tests.engine_helpers import cond_for as text_condition

from .helpers import AMUSED, MEISSONIC
from tests.engine_helpers import edit, generate

ROOT = AMUSED.parents[2]
SOURCE, TARGET = "a photo of a red cat", "a photo of a blue bird"


@pytest.fixture(scope="module", params=[AMUSED, MEISSONIC], ids=["amused", "meissonic"])
def setup(request):
    pipe = Pipeline.from_folder(request.param)
    size = (128, 128) if request.param == AMUSED else (1024, 64)  # (height, width); Meissonic tiny: 1024 px high
    grid = (size[0] // 16, size[1] // 16)
    source = torch.randint(0, pipe.transformer.codebook_size, (1, *grid), generator=torch.Generator().manual_seed(1))
    src = pipe.encode_prompts([SOURCE])
    conds = (text_condition(src, None, size[1], size[0], 1),
             text_condition(pipe.encode_prompts([TARGET]), pipe.encode_prompts([""]), size[1], size[0], 1))
    columns = word_columns("cat", token_pieces(pipe.text_encoder.tokenizer, src.token_ids[0]))
    return pipe, source, conds, columns


@pytest.mark.parametrize("strategy,options", [("auto", {}), ("purity", {}), ("fas", {"q": 0.5}),
                                              ("entropy-bounded", {})])
def test_tokens_outside_the_region_stay_exactly_the_source_tokens(setup, strategy, options):
    pipe, source, (src_cond, tgt_cond), columns = setup
    steps = []
    result = edit(pipe.transformer, source, src_cond, tgt_cond, columns, generators=make_generators(0, 1),
                            strategy=strategy, rule_options=options, steps=4, cfg=9.0,
                            callback=lambda r: steps.append(r.tokens.clone()))
    region = result.region
    assert region.any() and (~region).any()
    for tokens in steps + [result.tokens]:
        assert torch.equal(tokens[~region], source[~region])
    assert (result.tokens != pipe.mask_token_id).all()
    assert (result.tokens[region] != source[region]).any()  # something was regenerated inside


def test_the_schedule_counts_over_the_region(setup):
    pipe, source, (src_cond, tgt_cond), columns = setup
    masked = []
    result = edit(pipe.transformer, source, src_cond, tgt_cond, columns, generators=make_generators(0, 1),
                            steps=4, schedule="linear", callback=lambda r: masked.append(int(r.masked.sum())))
    r = int(result.region.sum())
    n = source.numel()
    expected = [max(1, min(r - 1, int(np.floor(n * (r / n) * (1 - (i + 1) / 4))))) for i in range(3)] + [0]
    assert masked == expected


def test_the_region_follows_the_word_map(setup):
    pipe, source, (src_cond, _), columns = setup
    found = edit_region(pipe.transformer, source, src_cond, columns, RegionOptions(select="word"))
    h, w = source.shape[1:]
    assert found.region.shape == (1, h, w) and found.word_map.shape == (1, h, w)
    assert found.word_map.min() >= 0 and found.word_map.max() <= 1
    expected = found.word_map > found.word_map.mean() + 0 * found.word_map.std()
    assert torch.equal(found.region, expected)
    strict = edit_region(pipe.transformer, source, src_cond, columns, RegionOptions(select="word", k=1.0))
    assert strict.region.sum() <= found.region.sum() and (strict.region <= found.region).all()


def test_region_options_threshold_top_q_blur_and_dilate():
    raw = torch.zeros(1, 4, 4)
    raw[0, 1, 2] = 1.0
    raw[0, 2, 2] = 0.5
    plain = region_from_map(raw, (4, 4), RegionOptions(blur=False))
    assert plain.region[0].nonzero().tolist() == [[1, 2], [2, 2]]
    top = region_from_map(raw, (8, 8), RegionOptions(threshold="top_q", top_q=1 / 16, blur=False))
    assert top.region.shape == (1, 8, 8) and top.region.sum() == 4  # one transformer cell = 2x2 tokens
    assert top.region[0, 2:4, 4:6].all()
    grown = region_from_map(raw, (4, 4), RegionOptions(blur=False, dilate=1))
    assert grown.region.sum() == 12 and (plain.region <= grown.region).all()
    blurred = region_from_map(raw, (4, 4), RegionOptions())
    assert blurred.region.sum() > plain.region.sum()
    flat = region_from_map(torch.ones(1, 4, 4), (4, 4), RegionOptions())
    assert flat.region.sum() == 1  # never empty
    with pytest.raises(ValueError, match="threshold 'otsu' is unknown"):
        RegionOptions(threshold="otsu")


def test_a_given_region_and_masked_sources(setup):
    pipe, source, (src_cond, tgt_cond), columns = setup
    region = torch.zeros_like(source, dtype=torch.bool)
    region[:, :2, :2] = True
    result = edit(pipe.transformer, source, src_cond, tgt_cond, columns, generators=make_generators(0, 1),
                            steps=3, region=region)
    assert torch.equal(result.region, region) and torch.equal(result.tokens[~region], source[~region])
    with pytest.raises(ValueError, match="contain masked positions"):
        edit(pipe.transformer, torch.full_like(source, pipe.mask_token_id), src_cond, tgt_cond, columns,
                       generators=make_generators(0, 1), steps=3)
    with pytest.raises(ValueError, match="edit strategy 'best' is unknown"):
        edit(pipe.transformer, source, src_cond, tgt_cond, columns, generators=make_generators(0, 1),
                       strategy="best")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def tcts(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tcts", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_edit_from_the_command_line_keeps_everything_outside_the_region(tmp_path):
    image = AMUSED / "inputs" / "image_256x256.png"
    out, mask, tokens = tmp_path / "edit.png", tmp_path / "region.png", tmp_path / "edit.npy"
    proc = tcts("edit", "--model", AMUSED, "--image", image, "--source-prompt", SOURCE, "--target-prompt", TARGET,
                "--word", "cat", "--steps", 4, "--seed", 0, "--out", out,
                "--mask-out", mask, "--tokens-out", tokens)
    assert "4/4" in proc.stderr
    pipe = Pipeline.from_folder(AMUSED)
    source = encode_images(pipe.vq, load_image(image))[0].numpy()
    edited = np.load(tokens)
    region = np.asarray(Image.open(mask).convert("L"))
    assert region.shape == (256, 256) and set(np.unique(region)) <= {0, 255}
    inside = region[::16, ::16] == 255
    assert inside.any() and (~inside).any()
    assert (edited[~inside] == source[~inside]).all()
    assert Image.open(out).size == (256, 256)


@pytest.mark.slow
def test_edit_and_attention_maps_name_a_missing_word(tmp_path):
    proc = tcts("edit", "--model", AMUSED, "--image", AMUSED / "inputs" / "image_128x96.png", "--source-prompt",
                SOURCE, "--target-prompt", TARGET, "--word", "dog", "--out", tmp_path / "e.png", check=False)
    assert proc.returncode == 2
    assert "the word 'dog' is not in the prompt 'a photo of a red cat'; its words are: a, photo, of, red, cat" \
        in proc.stderr
    assert not (tmp_path / "e.png").exists()


@pytest.mark.slow
def test_generate_with_fas_writes_the_attention_maps(tmp_path):
    out, maps = tmp_path / "x.png", tmp_path / "maps.png"
    proc = tcts("generate", "--model", AMUSED, "--prompt", "a zebra on grass", "--sampler", "fas", "--fas-q", 0.25,
                "--steps", 4, "--width", 64, "--height", 64, "--out", out, "--attention-out", maps,
                "--attention-word", "zebra")
    names = ["maps-word.png", "maps-word-mask.png", "maps-lowfreq.png", "maps-lowfreq-mask.png"]
    for name in names:
        assert Image.open(tmp_path / name).size == (64, 64)
        assert str(tmp_path / name) in proc.stdout
    low = np.asarray(Image.open(tmp_path / "maps-lowfreq-mask.png").convert("L"))
    assert set(np.unique(low)) == {0, 255} and (low == 255).mean() == 0.5
    bad = tcts("generate", "--model", AMUSED, "--prompt", "a zebra on grass", "--out", tmp_path / "y.png",
               "--attention-out", maps, "--attention-word", "horse", check=False)
    assert bad.returncode == 2 and "'horse' is not in the prompt" in bad.stderr and not (tmp_path / "y.png").exists()


@pytest.mark.slow
def test_tcts_fas_from_the_command_line_uses_the_selector_and_fas_options(tmp_path):
    from tcts.selector import SelectorConfig, TokenSelector, save_selector

    torch.manual_seed(0)
    save_selector(TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                               num_heads=2, max_grid=(8, 8))), tmp_path / "sel")
    common = ["generate", "--model", AMUSED, "--prompt", "a red cat", "--steps", 4, "--width", 64, "--height", 64]
    tcts(*common, "--sampler", "tcts-fas", "--selector", tmp_path / "sel", "--selector-noise", 0.5, "--fas-q", 0.3,
         "--fas-regroup", "freeze_after", "--out", tmp_path / "a.png", "--tokens-out", tmp_path / "a.npy")
    from tcts.selector import load_selector

    pipe = Pipeline.from_folder(AMUSED)
    ref = generate(pipe, "a red cat", sampler="tcts-fas", steps=4, width=64, height=64,
                        rule_options={"selector": load_selector(tmp_path / "sel", pipe.transformer), "noise": 0.5,
                                      "q": 0.3, "regroup": "freeze_after"})
    assert (np.load(tmp_path / "a.npy") == ref.tokens[0].numpy()).all()
    missing = tcts(*common, "--sampler", "tcts-fas", "--out", tmp_path / "b.png", check=False)
    assert missing.returncode == 2 and "--selector" in missing.stderr

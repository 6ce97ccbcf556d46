"""Regions for any word of the object (docs/method.md, Mask-free editing): an adjective or a phrase selects the
object it describes, not its surroundings; the prompt contrast marks what the target prompt changes."""
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.shapes.world import render_batch, scene_from_caption
from tcts.attention import object_columns, phrase_head, prompt_words, token_pieces, word_columns
from tcts.contrast import prompt_contrast
from tcts.editing import RegionOptions, edit_region, region_columns
from tcts.engine import micro_conditions
from tcts.pipeline import Pipeline, encode_images
from tcts.sampling.step import Conditioning

DEMO = Path(__file__).resolve().parents[1] / "models" / "shapes-demo"
SOURCE = "a large red circle left of a small blue triangle on a striped background"


def pieces(text: str) -> list[str]:
    """CLIP-style pieces: every word one piece ending in ``</w>``, between start and end tokens."""
    return ["<|startoftext|>", *(w + "</w>" for w in text.replace(",", " ,").split()), "<|endoftext|>"]


def columns_of(word: str, text: str) -> list[int]:
    return word_columns(word, pieces(text), text)


# ---------------------------------------------------------------------------------------------
# words -> the object's columns
# ---------------------------------------------------------------------------------------------

def test_an_adjective_names_the_noun_it_describes_not_the_background():
    assert object_columns("red", pieces(SOURCE), SOURCE) == columns_of("circle", SOURCE)
    assert object_columns("small", pieces(SOURCE), SOURCE) == columns_of("triangle", SOURCE)
    assert object_columns("striped", pieces(SOURCE), SOURCE) == columns_of("background", SOURCE)


def test_a_phrase_and_a_noun_name_their_head_noun():
    assert object_columns("large red circle", pieces(SOURCE), SOURCE) == columns_of("circle", SOURCE)
    assert object_columns("blue triangle", pieces(SOURCE), SOURCE) == columns_of("triangle", SOURCE)
    assert object_columns("circle", pieces(SOURCE), SOURCE) == columns_of("circle", SOURCE)


def test_break_words_end_a_phrase_and_are_their_own_head():
    text = "a small red circle, a small blue square and a small green triangle from left to right"
    words = prompt_words(pieces(text))
    index = [w for w, _ in words].index("blue")
    assert words[phrase_head(words, index)][0] == "square"
    left = [w for w, _ in words].index("left")
    assert phrase_head(words, left) == left                      # a relation word is no noun phrase
    assert object_columns("green", pieces(text), text) == columns_of("triangle", text)


def test_a_repeated_adjective_names_every_object_it_describes():
    text = "a small red circle, a small blue square and a small green triangle from left to right"
    heads = object_columns("small", pieces(text), text)
    assert heads == sorted(columns_of("circle", text) + columns_of("square", text) + columns_of("triangle", text))


def test_region_columns_by_selection():
    p = pieces(SOURCE)
    red, circle = columns_of("red", SOURCE), columns_of("circle", SOURCE)
    assert region_columns("red", p, SOURCE, "word") == red
    assert region_columns("red", p, SOURCE, "contrast") == red
    assert region_columns("red", p, SOURCE, "object") == circle
    assert region_columns("red", p, SOURCE, "object+word") == sorted(red + circle)
    with pytest.raises(ValueError, match="the word 'green' is not in the prompt"):
        region_columns("green", p, SOURCE, "object")
    with pytest.raises(ValueError, match="region select 'head' is unknown; expected one of contrast, object"):
        region_columns("red", p, SOURCE, "head")
    with pytest.raises(ValueError, match="region select 'head' is unknown"):
        RegionOptions(select="head")
    with pytest.raises(ValueError, match="contrast samples must be an integer >= 1"):
        RegionOptions(samples=0)
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        RegionOptions(mask_ratio=0.0)


# ---------------------------------------------------------------------------------------------
# the demo model: the region of a changed attribute is the object
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    pipe = Pipeline.from_folder(DEMO)
    scene = scene_from_caption(SOURCE, seed=3)
    tokens = encode_images(pipe.vq, torch.from_numpy(render_batch([scene], 64)))
    truth = torch.zeros(1, 8, 8, dtype=torch.bool)
    obj = scene.objects[0]                                  # the large red circle
    truth[0, obj.y:obj.y + obj.cells, obj.x:obj.x + obj.cells] = True
    return pipe, tokens, truth


def condition(pipe, text: str) -> Conditioning:
    enc = pipe.encode_prompts([text])
    return Conditioning(enc.hidden_states, enc.pooled, micro_conditions(64, 64, 1))


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


@pytest.mark.parametrize("word", ["red", "circle", "large red circle"])
def test_any_word_of_the_object_gives_the_object_s_region_not_the_background(demo, word):
    pipe, tokens, truth = demo
    target = SOURCE.replace("red circle", "yellow circle")
    p = token_pieces(pipe.text_encoder.tokenizer, pipe.encode_prompts([SOURCE]).token_ids[0])
    found = edit_region(pipe.transformer, tokens, condition(pipe, SOURCE), region_columns(word, p, SOURCE),
                        RegionOptions(), target=condition(pipe, target))
    assert iou(found.region, truth) >= 0.75
    assert int((found.region & ~truth).sum()) <= 2                # at most two background tokens


def test_the_contrast_is_zero_for_the_same_prompt_and_a_batch_equals_single_runs(demo):
    pipe, tokens, _ = demo
    src = condition(pipe, SOURCE)
    same = prompt_contrast(pipe.transformer, tokens, src, src, samples=2)
    assert same.shape == (1, 8, 8) and same.abs().max() < 1e-4
    tgt = condition(pipe, SOURCE.replace("circle", "square"))
    both = prompt_contrast(pipe.transformer, tokens.repeat(2, 1, 1), src.rows([0, 0]), tgt.rows([0, 0]),
                           samples=2, seed=[5, 5])
    one = prompt_contrast(pipe.transformer, tokens, src, tgt, samples=2, seed=5)
    torch.testing.assert_close(both, one.repeat(2, 1, 1), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="one source and one target row per image"):
        prompt_contrast(pipe.transformer, tokens.repeat(2, 1, 1), src, tgt)
    with pytest.raises(ValueError, match="needs the target prompt's condition"):
        edit_region(pipe.transformer, tokens, src, [1], RegionOptions())


def test_the_attention_selections_read_the_object_s_columns(demo):
    pipe, tokens, truth = demo
    p = token_pieces(pipe.text_encoder.tokenizer, pipe.encode_prompts([SOURCE]).token_ids[0])
    src = condition(pipe, SOURCE)
    by_object = edit_region(pipe.transformer, tokens, src, region_columns("red", p, SOURCE, "object"),
                            RegionOptions(select="object"))
    by_noun = edit_region(pipe.transformer, tokens, src, region_columns("circle", p, SOURCE, "word"),
                          RegionOptions(select="word"))
    assert torch.equal(by_object.region, by_noun.region)          # "red" reads the circle's columns
    assert np.isfinite(by_object.word_map.numpy()).all()

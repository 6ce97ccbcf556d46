"""The shapes world: determinism, caption grammar, the held-out split, the detector (on ground-truth,
tokenized and VQ-reconstructed renders, with a shuffled-caption control) and the world tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab.shapes import detector
from lab.shapes.world import (BACKGROUNDS, COLOURS, GRID, HELDOUT_BACKGROUNDS, HELDOUT_COLOUR_PAIRS, HELDOUT_RELATIONS,
                               SHAPES, SIZES, layout, parse_caption, render, render_batch, sample_scene, scenes)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "shapes-demo"


def test_scenes_are_deterministic_by_seed():
    a = [sample_scene([5, i]) for i in range(20)]
    b = [sample_scene([5, i]) for i in range(20)]
    assert a == b
    assert all(np.array_equal(render(x), render(y)) for x, y in zip(a, b))
    assert [s.caption for s in a] != [s.caption for s in scenes("train", 20, seed=6)]


@pytest.mark.parametrize("size", [64, 128])
def test_render_shape_range_and_greys(size):
    s = sample_scene([1, 2], "any", n_objects=2)
    img = render(s, size)
    assert img.shape == (size, size, 3) and img.dtype == np.float32
    assert 0 <= img.min() and img.max() <= 1
    # background pixels are grey: a caption-free scene has no chroma anywhere
    bg = s.background.render(size)
    assert bg.shape == (size, size)


def test_caption_grammar_roundtrip_and_vocabulary():
    for s in scenes("any", 300, seed=3):
        spec = parse_caption(s.caption)
        assert [(o.size, o.colour, o.shape) for o in spec.objects] == [(o.size, o.colour, o.shape) for o in s.objects]
        assert spec.background == s.background.kind
        assert len({o.colour for o in s.objects}) == len(s.objects)    # distinct colours
    with pytest.raises(ValueError):
        parse_caption("a photo of a red cat")
    counts = {n: 0 for n in (1, 2, 3)}
    for s in scenes("any", 300, seed=4):
        counts[len(s.objects)] += 1
    assert all(c > 20 for c in counts.values())


def test_layout_is_a_function_of_the_caption():
    """Same caption, same object tiles: only the background's greys, direction and noise vary."""
    by_caption: dict[str, set] = {}
    for s in scenes("any", 600, seed=9):
        by_caption.setdefault(s.caption, set()).add(tuple((o.x, o.y) for o in s.objects))
    assert all(len(v) == 1 for v in by_caption.values())
    assert layout(["large"], None) == [(2, 2)] and layout(["small"], None) == [(3, 3)]
    assert layout(["small", "large"], "left of") == [(1, 3), (4, 2)]
    assert layout(["small", "small"], "below") == [(3, 5), (3, 1)]
    assert layout(["small"] * 3, None) == [(0, 3), (3, 3), (6, 3)]
    with pytest.raises(ValueError, match="small"):
        layout(["large", "small", "small"], None)
    for s in scenes("any", 200, seed=12):
        assert all(0 <= o.x and o.x + o.cells <= GRID and 0 <= o.y and o.y + o.cells <= GRID for o in s.objects)


def test_object_tiles_do_not_depend_on_the_background():
    """An object's tile (dark plate + inset shape) is the same pixels on every background."""
    from lab.shapes.world import Background, Scene

    obj = sample_scene([1, 0], "any", n_objects=1).objects[0]
    c = 64 // GRID
    tiles = set()
    for kind in BACKGROUNDS:
        for greys in ((0.25, 0.25), (0.22, 0.52), (0.92, 0.60)):
            img = render(Scene((obj,), Background(kind, greys, vertical=True, seed=3)))
            tile = img[obj.y * c:(obj.y + obj.cells) * c, obj.x * c:(obj.x + obj.cells) * c]
            tiles.add(tile.tobytes())
            assert not np.array_equal(img, render(Scene((), Background(kind, greys, vertical=True, seed=3))))
    assert len(tiles) == 1


def test_relations_hold_in_cells():
    for s in scenes("any", 300, seed=8):
        o = s.objects
        if len(o) == 2:
            a, b = o
            rel = s.relation
            if rel == "left of":
                assert a.x + a.cells <= b.x
            elif rel == "right of":
                assert b.x + b.cells <= a.x
            elif rel == "above":
                assert a.y + a.cells <= b.y
            else:
                assert b.y + b.cells <= a.y
        if len(o) == 3:
            assert o[0].x + o[0].cells <= o[1].x and o[1].x + o[1].cells <= o[2].x


def test_heldout_split_is_by_combination_and_disjoint():
    train = [s.spec for s in scenes("train", 400, seed=10)]
    held = [s.spec for s in scenes("heldout", 200, seed=11)]
    assert not any(sp.heldout for sp in train) and all(sp.heldout for sp in held)
    assert not {s.caption for s in scenes("train", 400, seed=10)} & {s.caption for s in scenes("heldout", 200, seed=11)}
    # every single attribute, and every pair inside a held-out triple, still occurs in training
    pairs = {p for sp in train for p in sp.combos()["colour_pairs"]}
    for first, second in HELDOUT_COLOUR_PAIRS:
        assert any(p[0] == first for p in pairs) and any(p[1] == second for p in pairs)
    # every object (size, colour, shape) of a held-out caption also appears in training captions:
    # held-out captions are new arrangements of picture elements the generator has seen
    objs = {(o.size, o.colour, o.shape) for sp in train for o in sp.objects}
    assert {(o.size, o.colour, o.shape) for sp in held for o in sp.objects} <= objs
    rels = {r for sp in train for r in sp.combos()["relations"]}
    for a, rel, b in HELDOUT_RELATIONS:
        assert any(r[1] == rel for r in rels) and any(r[0] == a for r in rels) and any(r[2] == b for r in rels)
    bgs = {p for sp in train for p in sp.combos()["backgrounds"]}
    for colour, bg in HELDOUT_BACKGROUNDS:
        assert any(p[0] == colour for p in bgs) and any(p[1] == bg for p in bgs)
    assert {o.colour for sp in held for o in sp.objects} == set(COLOURS)


@pytest.mark.parametrize("size", [64, 128])
def test_detector_on_ground_truth_renders(size):
    sc = list(scenes("any", 120 if size == 64 else 40, seed=21))
    res = detector.aggregate([detector.check(render(s, size), s.caption) for s in sc])
    assert res["whole"] >= 0.98, res
    for key in ("object_recall", "shape", "size", "relation", "background"):
        assert res[key] >= 0.98, (key, res)


def test_detector_shuffled_caption_control():
    sc = list(scenes("any", 120, seed=22))
    caps = [s.caption for s in sc]
    perm = np.random.default_rng(0).permutation(len(caps))
    while (perm == np.arange(len(caps))).any():
        perm = np.roll(perm, 1)
    res = detector.aggregate([detector.check(render(s), caps[p]) for s, p in zip(sc, perm)])
    assert res["whole"] <= 0.03, res


def test_detector_sees_every_attribute_value():
    for shape in SHAPES:
        for size in SIZES:
            for bg in BACKGROUNDS:
                s = next(x for x in scenes("any", 3000, seed=23) if len(x.objects) == 1
                         and x.objects[0].shape == shape and x.objects[0].size == size and x.background.kind == bg)
                an = detector.analyse(render(s))
                assert (an.objects[0].shape, an.objects[0].size, an.background) == (shape, size, bg), s.caption


@pytest.mark.slow
def test_detector_on_tokenized_renders():
    """A small patch alphabet (k-means, fitted here in seconds) keeps the detector near its ceiling."""
    from lab.shapes.patchcodes import PatchCodebook

    fit = render_batch(list(scenes("any", 800, seed=30)))
    book = PatchCodebook.fit(fit, size=1024, dim=32, iters=8, log=lambda m: None)
    sc = list(scenes("any", 80, seed=31))
    x = render_batch(sc)
    ids = book.encode(x)
    assert ids.shape == (80, 8, 8)
    res = detector.score(book.decode(ids), [s.caption for s in sc])
    assert res["whole"] >= 0.85, res


@pytest.mark.skipif(not (DEMO / "vqvae" / "config.json").is_file(), reason="models/shapes-demo not exported")
def test_detector_on_vq_reconstructed_renders():
    """The shipped VQ's reconstructions (the tokenizer ceiling), on train and held-out captions."""
    import torch

    from tcts.checkpoints import load_vq

    vq = load_vq(DEMO / "vqvae")
    for split in ("train", "heldout"):
        sc = list(scenes(split, 60, seed=40))
        x = torch.from_numpy(render_batch(sc)).permute(0, 3, 1, 2)
        with torch.no_grad():
            y = vq.decode_ids(vq.encode_to_ids(x)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        res = detector.score(y, [s.caption for s in sc])
        assert res["whole"] >= 0.95, (split, res)
        caps = [s.caption for s in sc]
        shuffled = detector.score(y, caps[1:] + caps[:1])
        assert shuffled["whole"] <= 0.05, shuffled


def test_world_tokenizer_matches_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    from lab.shapes.text import WordTokenizer, build_tokenizer_files

    vocab = build_tokenizer_files(tmp_path)
    assert vocab["<|endoftext|>"] == max(vocab.values()) and vocab["<|startoftext|>"] == len(vocab) - 2
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    ref = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    fast = WordTokenizer(vocab)
    caps = [s.caption for s in scenes("any", 60, seed=50)] + [""]
    for c in caps:
        assert fast(c) == ref(c, padding="max_length", max_length=77, truncation=True).input_ids
    # every world word is a single token
    assert len(ref(caps[0]).input_ids) == len(caps[0].replace(",", " ,").split()) + 2
    json.loads((tmp_path / "tokenizer_config.json").read_text())

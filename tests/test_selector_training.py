"""Guidance-sampling training of the selector, on the tiny aMUSEd pipeline.

Training examples are made the way the sampler meets them: a real token map masked as before a random step
of the schedule, reconstructed in one step with the loop's own guided sampling, labelled "changed" where the
reconstruction differs. Every random choice belongs to one sample of a seeded stream, so splitting the stream
over processes or micro-batches, or stopping and resuming, gives the same selector.
"""
import pytest
import torch

from tcts.engine import make_generators
from tcts.pipeline import Pipeline
from tests.engine_helpers import cond_for as text_condition
from tests.engine_helpers import loop as sample, rule as make_rule
from tcts.selector import load_selector
from tcts.train import (ExampleMaker, TrainConfig, caption_folder, guidance_reconstruct, in_memory_captions,
                        split_validation, train_selector)
from tcts.settings import Sampling
from tcts.train.selector_trainer import Masked, masked_before_step, read_training_state

from .helpers import AMUSED, MEISSONIC

COLOURS = {"a red square": range(0, 8), "a blue circle": range(8, 16), "a green tree": range(16, 24)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU run fastest (and reproducibly) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def toy_items(count=48, seed=0):
    """Token maps whose codes come from a small per-caption set: anything else the generator draws is wrong."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        caption = list(COLOURS)[i % len(COLOURS)]
        codes = torch.tensor(list(COLOURS[caption]))
        items.append((codes[torch.randint(0, len(codes), (8, 8), generator=g)], caption))
    return items


def small(**overrides):
    settings = dict(steps=4, batch_size=4, lr=1e-3, warmup=0, layers=1, width=32, heads=2, sampling_steps=8,
                    val_every=0, val_samples=0, save_every=0, log_every=1)
    return TrainConfig(**{**settings, **overrides})


def test_the_reconstruction_is_the_samplers_first_step(pipe):
    """All masked + step 0 is exactly what the sampling loop draws at its first step (same seed)."""
    cond = text_condition(pipe.encode_prompts(["a red square"]), pipe.encode_prompts([""]), 128, 128, 1)
    reports = []
    sample(pipe.transformer, cond, make_rule("purity"), steps=8, grid=(8, 8), generators=make_generators(7, 1),
           callback=reports.append)
    x0 = torch.zeros(1, 8, 8, dtype=torch.long)
    masked = Masked(x0, torch.ones(1, 8, 8, dtype=torch.bool), [0], cond, make_generators(7, 1))
    proposal = guidance_reconstruct(pipe.transformer, masked, Sampling(steps=8, cfg=10.0, temperature=1.0))
    assert torch.equal(proposal, reports[0].proposal)


def test_examples_mask_as_before_a_random_step_and_label_what_changed(pipe):
    items = toy_items(8)
    maker = ExampleMaker(pipe, in_memory_captions(items), torch.stack([t for t, _ in items]), small(),
                         torch.device("cpu"))
    batch = maker.make(range(16))
    x0 = maker.tokens[[maker.data.image_index[maker.order(p)] for p in range(16)]]
    assert torch.equal(batch.changed, batch.tokens != x0)
    assert not (batch.changed & ~batch.masked).any()              # visible tokens are kept, never "changed"
    for row, step in enumerate(batch.steps_taken):
        assert 0 <= step <= 6                                     # the steps at which the sampler asks the selector
        assert int(batch.masked[row].sum()) == masked_before_step("cosine", step, 8, 64)
        assert batch.t[row] == pytest.approx((step + 1) / 8)      # progress after the step, as at inference
    assert len(set(batch.steps_taken)) > 1
    drops = torch.cat([maker.make(range(p, p + 50)).drop for p in range(0, 400, 50)])
    assert 0.05 < drops.float().mean() < 0.15                     # 10 % caption dropout


def test_the_sample_stream_does_not_depend_on_how_it_is_split(pipe):
    items = toy_items(8)
    maker = ExampleMaker(pipe, in_memory_captions(items), torch.stack([t for t, _ in items]), small(),
                         torch.device("cpu"))
    whole = maker.make(range(8, 14))
    parts = [maker.make(range(8, 10)), maker.make(range(10, 14))]
    for field in ("tokens", "changed", "masked", "drop", "t"):
        assert torch.equal(getattr(whole, field), torch.cat([getattr(p, field) for p in parts])), field
    assert whole.steps_taken == parts[0].steps_taken + parts[1].steps_taken


def test_a_briefly_trained_selector_finds_the_wrong_tokens_far_better_than_chance(pipe, tmp_path):
    data = in_memory_captions(toy_items(48))
    config = small(steps=60, batch_size=8, layers=2, width=64, heads=4, val_samples=48, log_every=20)
    result = train_selector(pipe, data, tmp_path / "toy", config, val_data=in_memory_captions(toy_items(24, seed=1)),
                            verbose=False)
    v = result.validation
    print(f"toy task: precision {v['precision']:.3f} (chance {v['chance_precision']:.3f}), "
          f"recall {v['recall']:.3f} (chance {v['chance_recall']:.3f})")
    assert v["precision"] >= v["chance_precision"] + 0.12
    assert v["recall"] >= v["chance_recall"] + 0.12
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[-1] < losses[0]


def test_resuming_from_a_checkpoint_continues_exactly(pipe, tmp_path):
    data = in_memory_captions(toy_items(12))
    straight = train_selector(pipe, data, tmp_path / "straight", small(steps=4, ema=0.5), verbose=False)
    train_selector(pipe, data, tmp_path / "resumed", small(steps=2, ema=0.5), verbose=False)
    resumed = train_selector(pipe, data, tmp_path / "resumed", small(steps=4, ema=0.5), resume=True, verbose=False)
    for key, value in straight.selector.state_dict().items():
        assert torch.equal(value, resumed.selector.state_dict()[key]), key
    info, tensors = read_training_state(tmp_path / "resumed" / "checkpoint")
    assert info["step"] == 4 and info["train_config"]["ema"] == 0.5
    assert {k.split(".")[0] for k in tensors} == {"model", "ema", "optim"}
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoint").iterdir()) == [
        "trainer_state.json", "trainer_state.safetensors"]
    exported = load_selector(tmp_path / "resumed" / "selector", pipe.transformer)   # the EMA weights
    assert torch.equal(exported.head.weight, tensors["ema.head.weight"])


def test_gradient_accumulation_equals_a_bigger_batch(pipe, tmp_path):
    data = in_memory_captions(toy_items(12))
    big = train_selector(pipe, data, tmp_path / "big", small(steps=3, batch_size=4), verbose=False).selector
    accumulated = train_selector(pipe, data, tmp_path / "acc", small(steps=3, batch_size=2, grad_accum=2),
                                 verbose=False).selector
    for key, value in big.state_dict().items():
        assert torch.allclose(value, accumulated.state_dict()[key], atol=1e-5), key


def test_meissonic_trains_a_selector_for_its_own_codebook_and_text_width(tmp_path):
    meissonic = Pipeline.from_folder(MEISSONIC)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(0, 64, (4, 6), generator=g), caption) for caption in ["a cat", "a dog"] * 3]
    result = train_selector(meissonic, in_memory_captions(items), tmp_path / "m", small(steps=2, val_samples=4),
                            val_data=in_memory_captions(items), verbose=False)
    assert (result.selector.codebook_size, result.selector.text_hidden_size) == (64, 32)
    assert result.validation["examples"] == 4
    assert load_selector(tmp_path / "m" / "selector", meissonic.transformer).config.generator_family == "meissonic"


def test_caption_folders_read_jsonl_or_tab_separated_captions(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 30), "red").save(tmp_path / name)
    (tmp_path / "captions.jsonl").write_text(
        '{"file": "a.png", "caption": "one"}\n\n{"file_name": "sub/c.png", "text": "two"}\n'
        '{"file": "a.png", "caption": "three"}\n')
    data = caption_folder(tmp_path)
    assert data.captions == ["one", "two", "three"] and data.image_index == [0, 1, 0] and len(data.images) == 2
    (tmp_path / "captions.jsonl").unlink()
    (tmp_path / "captions.txt").write_text("# file<TAB>caption\na.png\ta red thing\nb.png\tanother\n")
    assert caption_folder(tmp_path).captions == ["a red thing", "another"]
    (tmp_path / "captions.txt").write_text("missing.png\tnope\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        caption_folder(tmp_path)
    (tmp_path / "captions.txt").write_text("../outside.png\tnope\n")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        caption_folder(tmp_path)
    (tmp_path / "captions.txt").unlink()
    with pytest.raises(FileNotFoundError, match="has no captions file"):
        caption_folder(tmp_path)


def test_validation_holds_out_whole_images():
    data = in_memory_captions(toy_items(40))
    train, val = split_validation(data, 0.1)
    assert len(train) + len(val) == 40 and len(val) == 4
    assert not set(train.image_index) & set(val.image_index)
    assert split_validation(in_memory_captions(toy_items(5)), 0.1)[1] is None


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="sampling_steps=1"):
        TrainConfig(sampling_steps=1)
    with pytest.raises(ValueError, match="ema=1.0"):
        TrainConfig(ema=1.0)
    with pytest.raises(ValueError, match="token grid must be"):
        in_memory_captions([(torch.zeros(2, 2, 2, dtype=torch.long), "x")])
    with pytest.raises(ValueError, match="one kind and size"):
        in_memory_captions([(torch.zeros(4, 4, dtype=torch.long), "x"), (torch.zeros(8, 8, dtype=torch.long), "y")])

"""Drawing the reference's random numbers ahead (``tcts/sampling/draw_ahead.py``), the default for a model on a
GPU, gives the tokens of drawing them in turn: for text-to-image, image-to-image, inpainting, every rule (with
the options that make rules draw more noise), batches and a cancelled run. On the CPU the path is forced on
here; the GPU benchmark (``lab/gpu_run.py``) checks the identity again on the GPU machine's torch."""
from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

import tcts.engine
from tcts.pipeline import Pipeline
from tcts.sampling.draw_ahead import DrawAhead
from tcts.sampling.halton import HaltonOptions
from tcts.sampling.registry import SAMPLERS, SELECTOR_SAMPLERS, RuleOptions, make_rule
from tcts.sampling.remdm import ReMDMOptions
from tcts.selector.rule import SelectorOptions
from tcts.selector.model import SelectorConfig, TokenSelector
from tests.engine_helpers import generate

from .helpers import AMUSED

PROMPT = "a photo of a red cat"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


@pytest.fixture(scope="module")
def selector():
    torch.manual_seed(0)
    return TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                        num_heads=2, max_grid=(8, 8), time_embed_dim=16)).eval()


@pytest.fixture
def ahead_on_cpu(monkeypatch):
    """Make the engine draw ahead on the CPU, as it does on a GPU (and check that it did)."""
    import tcts.sampling.loop

    proposals = []

    class Counted(DrawAhead):
        def propose(self, probs):
            proposals.append(probs.shape[0])
            return super().propose(probs)

    def run(fn):
        proposals.clear()
        with monkeypatch.context() as m:
            m.setattr(tcts.engine, "DRAW_AHEAD_DEVICE_TYPES", frozenset({"cpu"}))
            m.setattr(tcts.sampling.loop, "DrawAhead", Counted)
            try:
                return fn()
            finally:
                assert proposals, "the run did not draw ahead"
    return run


def no_draw_ahead_thread_left() -> bool:
    return not any(t.name.startswith("tcts-draw-ahead") for t in threading.enumerate())


@pytest.mark.parametrize("shape", [(16, 64), (256, 1024), (1024, 8192)])
def test_multinomial_is_the_argmax_of_probabilities_over_exponentials_from_the_same_generator(shape):
    """The identity the path rests on, on the installed torch: one multinomial sample without replacement
    is argmax(p / E) with E ~ Exp(1) filled from the generator, which ends in the same state."""
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(shape) * 4, dim=-1)
    p[:, :3] = 0  # impossible codes stay impossible
    by_multinomial, by_race = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    drawn = torch.multinomial(p, 1, generator=by_multinomial)[:, 0]
    raced = (p / torch.empty_like(p).exponential_(1, generator=by_race)).argmax(dim=-1)
    assert torch.equal(drawn, raced)
    assert torch.equal(by_multinomial.get_state(), by_race.get_state())


def test_a_proposal_drawn_ahead_equals_one_drawn_in_turn_and_leaves_the_generators_alike():
    probs = torch.softmax(torch.randn(3, 64, 32) * 3, dim=-1).half()   # a GPU model's fp16 probabilities
    in_turn = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    ahead_generators = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    ahead = DrawAhead(ahead_generators, "cpu", 64, 32)
    try:
        ahead.prefetch()
        drawn = ahead.propose(probs)
    finally:
        ahead.close()
    expected = torch.stack([torch.multinomial(p.float(), 1, generator=g)[:, 0] for p, g in zip(probs, in_turn)])
    assert torch.equal(drawn, expected)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(in_turn, ahead_generators))
    assert no_draw_ahead_thread_left()


def run_both(ahead_on_cpu, make):
    in_turn = make()
    drawn_ahead = ahead_on_cpu(make)
    assert no_draw_ahead_thread_left()
    return in_turn, drawn_ahead


#: options that make rules draw more of their own noise between the proposals
NOISY_OPTIONS = RuleOptions(selector=SelectorOptions(noise=1.0, choice="multinomial"), halton=HaltonOptions(roll=True),
                            remdm=ReMDMOptions(choice="random"))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_rule_gives_the_same_tokens_drawing_ahead(pipe, selector, ahead_on_cpu, sampler):
    options = replace(NOISY_OPTIONS, selector_model=selector if sampler in SELECTOR_SAMPLERS else None)
    in_turn, ahead = run_both(ahead_on_cpu, lambda: generate(
        pipe, PROMPT, sampler=make_rule(sampler, options), steps=5, cfg=4.0, seed=11, width=64, height=64,
        batch_size=2).tokens)
    assert torch.equal(in_turn, ahead)


def test_image_to_image_and_inpainting_give_the_same_tokens_drawing_ahead(pipe, ahead_on_cpu):
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1
    for extra in ({"strength": 0.6}, {"mask": mask, "strength": 1.0}):
        in_turn, ahead = run_both(ahead_on_cpu, lambda: generate(
            pipe, PROMPT, sampler="random-revoke", steps=6, cfg=4.0, seed=5, init_image=image, **extra).tokens)
        assert torch.equal(in_turn, ahead)


def test_a_cancelled_run_leaves_no_thread_drawing_and_the_next_run_is_unchanged(pipe, ahead_on_cpu):
    def settings(**kw):
        return dict(sampler="purity", steps=6, cfg=4.0, seed=2, width=64, height=64, **kw)

    class Cancelled(Exception):
        pass

    def cancel_at_step_2(report):
        if report.step == 2:
            raise Cancelled

    expected = generate(pipe, PROMPT, **settings()).tokens
    with pytest.raises(Cancelled):
        ahead_on_cpu(lambda: generate(pipe, PROMPT, **settings(callback=cancel_at_step_2)))
    assert no_draw_ahead_thread_left()
    assert torch.equal(ahead_on_cpu(lambda: generate(pipe, PROMPT, **settings()).tokens), expected)

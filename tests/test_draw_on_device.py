"""Token draws on the model's device (``draw_on_device``): the GPU speed option. The default draws on the
CPU with the reference's generators; on a CPU model the option changes nothing; on a GPU the proposals come
from per-image GPU generators, so a seed repeats on that GPU and a batch still equals single runs."""
from __future__ import annotations

import pytest
import torch

from tcts.engine import make_generators
from tcts.pipeline import Pipeline
from tests.engine_helpers import generate, tokens_for as generate_tokens
from tests.engine_helpers import loop as sample, rule as make_rule

from .helpers import AMUSED

PROMPT = "a photo of a red cat"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(AMUSED)


def test_on_a_cpu_model_drawing_on_the_device_changes_nothing(pipe):
    reference = generate(pipe, PROMPT, steps=4, cfg=4.0, seed=3, width=64, height=64, batch_size=2)
    on_device = generate(pipe, PROMPT, steps=4, cfg=4.0, seed=3, width=64, height=64, batch_size=2,
                              draw_on_device=True)
    assert torch.equal(reference.tokens, on_device.tokens)
    assert on_device.settings["draw_on_device"] is True


def test_draw_generators_take_over_only_the_proposal_draws(model, cond):
    """With separate draw generators the rule's noise still comes from ``generators``: two runs that share
    the rule generators' seeds but not the draw generators' seeds differ, and equal seeds give equal runs."""
    def run(draw_seed: int) -> torch.Tensor:
        return sample(model, cond, make_rule("purity"), steps=4, grid=(8, 8), cfg=4.0,
                      generators=make_generators(0, 1), draw_generators=make_generators(draw_seed, 1))

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_one_draw_generator_per_image_is_required(model, cond):
    with pytest.raises(ValueError, match="one draw generator per image: got 2 for batch 1"):
        sample(model, cond, make_rule("purity"), steps=2, grid=(8, 8), cfg=4.0, generators=make_generators(0, 1),
               draw_generators=make_generators(0, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_draws_repeat_per_seed_and_a_batch_equals_single_runs(model, cond):
    gpu_model = model.to("cuda")
    try:
        def run(seed: int, batch: int) -> torch.Tensor:
            c = cond if batch == 1 else type(cond)(*(t.expand(batch, *t.shape[1:]) for t in (
                cond.hidden_states, cond.pooled, cond.micro_conds, cond.negative_hidden_states, cond.negative_pooled)))
            return generate_tokens(gpu_model, c, sampler="purity", steps=4, cfg=4.0, seed=seed, grid=(8, 8),
                                   draw_on_device=True).cpu()

        first = run(7, 2)
        assert torch.equal(first, run(7, 2))
        assert torch.equal(first[1:], run(8, 1))
    finally:
        model.to("cpu")

"""Meissonic runs through the same pipeline and loop and reproduces the reference token for token."""
import numpy as np
import pytest
import torch

from tcts.checkpoints import load_transformer
from tcts.pipeline import Pipeline

from .helpers import MEISSONIC, load_case
from tests.engine_helpers import generate

RUNS = [
    ("t2i_1024x64", "transformer", dict(prompt="a photo of a red cat", negative_prompt="low quality, blurry",
                                        height=1024, width=64)),
    ("t2i_1024x32_smallest", "transformer", dict(prompt="a photo of a red cat",
                                                 negative_prompt="low quality, blurry", height=1024, width=32)),
    ("t2i_nodown_128x96", "transformer_nodown", dict(prompt="a painting of a small bird with a hat",
                                                     height=128, width=96)),
]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_folder(MEISSONIC)


@pytest.mark.parametrize("name,sub,kwargs", RUNS)
def test_meissonic_text_to_image_matches_reference_every_step(pipe, name, sub, kwargs):
    pipe.transformer = load_transformer(MEISSONIC / sub)
    steps = []
    result = generate(pipe, steps=4, cfg=9.0, seed=0, callback=lambda r: steps.append(r.tokens.clone()), **kwargs)
    ref = load_case(MEISSONIC / "e2e" / f"{name}.safetensors")
    assert torch.equal(torch.stack(steps)[:, :1], ref["step_output_tokens"])
    assert torch.equal(result.tokens, ref["final_tokens"])
    assert np.abs(result.images.numpy() - np.load(MEISSONIC / "e2e" / f"{name}.image.npy")).max() <= 1e-4


def test_meissonic_pipeline_is_detected_from_the_folder(pipe):
    assert pipe.family == "meissonic"

"""Sequential (one component at a time) loading for one-shot runs: the same images as a fully loaded
pipeline, with at most one component's weights held at any moment."""
from __future__ import annotations

import pytest
import torch

from tcts.pipeline import Pipeline

from .helpers import AMUSED, MEISSONIC
from tests.engine_helpers import generate


def _held(pipe: Pipeline) -> list[str]:
    return [n for n in ("transformer", "vq", "text_encoder") if getattr(pipe, n) is not None]


@pytest.mark.parametrize("folder", [AMUSED, MEISSONIC], ids=["amused", "meissonic"])
def test_sequential_pipeline_matches_the_loaded_one_and_frees_each_component(folder):
    eager = Pipeline.from_folder(folder)
    seq = Pipeline.from_folder(folder, sequential=True)
    assert _held(seq) == [] and seq.default_size == eager.default_size and seq.family == eager.family
    seen = []

    def watch(report):
        seen.append(_held(seq))

    size = 64 if eager.family == "amused" else 128
    kwargs = dict(sampler="uniform", steps=4, cfg=3.0, seed=5, width=size, height=size, batch_size=2)
    a = generate(eager, "a red square", "blurry", **kwargs)
    b = generate(seq, "a red square", "blurry", callback=watch, **kwargs)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.images, b.images)
    assert seen and all(held == ["transformer"] for held in seen)   # only the transformer while sampling
    assert _held(seq) == []


@pytest.mark.slow
def test_sequential_img2img_and_inpaint_match():
    eager = Pipeline.from_folder(AMUSED)
    seq = Pipeline.from_folder(AMUSED, sequential=True)
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1
    for extra in ({"strength": 0.6}, {"mask": mask}):
        a = generate(eager, "a cat", init_image=image, steps=4, cfg=2.0, seed=1, **extra)
        b = generate(seq, "a cat", init_image=image, steps=4, cfg=2.0, seed=1, **extra)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.images, b.images)


def test_sequential_pipeline_checks_configs_without_reading_weights(tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(AMUSED, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    pipe = Pipeline.from_folder(broken, sequential=True)        # configs are fine: nothing read yet
    assert pipe.default_size == Pipeline.from_folder(AMUSED).default_size
    with pytest.raises(Exception, match="safetensors|header|diffusion_pytorch_model"):
        generate(pipe, "a cat", steps=2, cfg=2.0)

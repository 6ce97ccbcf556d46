"""Optional live comparison with diffusers' AmusedPipeline on the same tiny weights (skipped without
diffusers; pinned in requirements-dev.txt)."""
import pytest
import torch

from tcts.images import load_image
from tcts.pipeline import Pipeline

from .helpers import AMUSED
from tests.engine_helpers import generate

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def ours():
    return Pipeline.from_folder(AMUSED)


@pytest.mark.parametrize("seed,steps,cfg,size", [(0, 4, 10.0, (128, 96)), (5, 6, 3.0, (64, 64)),
                                                 (11, 12, 10.0, (96, 64))])
def test_text_to_image_tokens_equal_live_diffusers(ours, seed, steps, cfg, size):
    ref = diffusers.AmusedPipeline.from_pretrained(str(AMUSED))
    height, width = size
    with torch.no_grad():
        expected = ref("a photo of a red cat", height=height, width=width, num_inference_steps=steps,
                       guidance_scale=cfg, generator=torch.Generator().manual_seed(seed),
                       output_type="latent").images
    got = generate(ours, "a photo of a red cat", height=height, width=width, steps=steps, cfg=cfg, seed=seed)
    assert torch.equal(got.tokens, expected)


def test_img2img_tokens_equal_live_diffusers(ours):
    ref = diffusers.AmusedImg2ImgPipeline.from_pretrained(str(AMUSED))
    image = load_image(AMUSED / "inputs" / "image_128x96.png")
    with torch.no_grad():
        expected = ref("a blue bird", image=image.permute(0, 3, 1, 2), strength=0.75, num_inference_steps=8,
                       guidance_scale=10.0, generator=torch.Generator().manual_seed(2), output_type="latent").images
    got = generate(ours, "a blue bird", init_image=image, strength=0.75, steps=8, seed=2)
    assert torch.equal(got.tokens, expected)

"""Live previews show each token in the colour its code decodes to (tcts/preview.py)."""
from __future__ import annotations

import torch

from tcts.checkpoints import load_vq
from tcts.preview import CONTEXT, MASKED_GREY, CodeColours, code_colours, colour_preview
from tests.helpers import AMUSED


def vq():
    return load_vq(AMUSED / "vqvae").eval()


def test_a_code_has_the_mean_colour_of_the_centre_of_a_grid_filled_with_it():
    model = vq()
    table = CodeColours(model)
    f = int(model.downscale_factor)
    got = table.lookup(torch.tensor([[5, 9]]), mask_id=model.codebook_size + 7)
    with torch.inference_mode():
        pixels = model.decode_ids(torch.tensor([5, 9]).view(2, 1, 1).expand(2, CONTEXT, CONTEXT)).clamp(0, 1)
    centre = pixels[:, :, f:2 * f, f:2 * f].mean((2, 3))
    expected = (centre * 255).round().to(torch.uint8)
    assert torch.equal(got[0], expected)


def test_only_the_codes_that_appear_are_decoded_and_only_once():
    model = vq()
    table = CodeColours(model)
    calls = []
    decode = model.decode_ids
    model.decode_ids = lambda ids: calls.append(ids.shape[0]) or decode(ids)
    table.lookup(torch.tensor([[3, 3, 4], [4, 3, 3]]), mask_id=99)
    table.lookup(torch.tensor([[4, 3, 6]]), mask_id=99)
    assert calls == [2, 1]
    assert table.known.sum() == 3 and table.known[[3, 4, 6]].all()


def test_masked_and_out_of_codebook_tokens_are_grey():
    model = vq()
    mask_id = model.codebook_size + 7
    rgb = CodeColours(model).lookup(torch.tensor([[mask_id, -1, 10_000, 2]]), mask_id=mask_id)
    assert (rgb[0, :3] == MASKED_GREY).all()


def test_one_table_per_vq_and_previews_have_pixel_size():
    model = vq()
    assert code_colours(model) is code_colours(model)
    tokens = torch.tensor([[[1, 2], [3, 4]]])
    image = colour_preview(tokens, code_colours(model), mask_id=99, scale=16)
    assert image.size == (32, 32) and image.mode == "RGB"

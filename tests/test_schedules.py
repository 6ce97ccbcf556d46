"""Mask schedules, temperatures and the img2img/inpaint start rules follow the reference scheduler."""
import math

import pytest
import torch

from tcts.settings import Sampling
from tcts.starts import img2img_start, masked_start, noise_for_img2img
from tcts.sampling.schedules import choice_temperatures, mask_ratio, tokens_to_mask


def masked_counts(schedule, steps, n):
    counts = []
    unknown = torch.tensor([n])
    for step in range(steps - 1):
        count = int(tokens_to_mask(schedule, step, steps, n, unknown).item())
        counts.append(count)
        unknown = torch.tensor([count])
    return counts + [0]


def test_cosine_schedule_counts_equal_the_reference_scheduler_for_12_steps_on_1024_tokens():
    # float32 cos(pi/3) = 0.49999997, so step 8 masks 511 (diffusers AmusedScheduler gives the same)
    assert masked_counts("cosine", 12, 1024) == [1015, 989, 946, 886, 812, 724, 623, 511, 391, 265, 133, 0]


def test_temperatures_anneal_linearly_from_2_to_0():
    temps = choice_temperatures(12)
    assert temps[0] == 2.0 and temps[-1] == 0.0
    assert torch.allclose(temps[:-1] - temps[1:], torch.full((11,), 2 / 11))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "arccos", "square"])
def test_every_schedule_decreases_from_one_to_zero(schedule):
    ratios = [mask_ratio(schedule, s, 16).item() for s in range(16)]
    assert all(a >= b for a, b in zip(ratios, ratios[1:]))
    assert ratios[0] < 1 and abs(ratios[-1]) < 1e-6


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="schedule 'zigzag' is unknown"):
        mask_ratio("zigzag", 0, 4)


def test_count_is_clamped_to_leave_progress_each_step():
    # never fewer than 1 masked, never all of the still-masked tokens
    assert tokens_to_mask("cosine", 0, 2, 100, torch.tensor([100])).item() == 70
    assert tokens_to_mask("cosine", 0, 100, 100, torch.tensor([5])).item() == 4
    assert tokens_to_mask("linear", 98, 100, 100, torch.tensor([50])).item() == 1


def test_img2img_strength_half_of_12_runs_6_steps_after_masking_about_71_percent():
    start = img2img_start(12, 0.5)
    assert start == 6
    tokens = torch.zeros(1, 64, 64, dtype=torch.long)
    noised = noise_for_img2img(tokens, Sampling(steps=12, schedule="cosine"), start, 99, [torch.Generator().manual_seed(0)])
    assert abs((noised == 99).float().mean().item() - math.cos(math.pi / 4)) < 0.02


def test_reference_quirk_strength_one_masks_nothing_and_full_mode_masks_everything():
    tokens = torch.zeros(1, 8, 8, dtype=torch.long)
    start = img2img_start(12, 1.0)
    assert start == 0
    same = noise_for_img2img(tokens, Sampling(steps=12, schedule="cosine"), start, 99, [torch.Generator().manual_seed(0)])
    assert (same == 99).sum() == 0
    full = noise_for_img2img(tokens, Sampling(steps=12, schedule="cosine"), start, 99, [torch.Generator().manual_seed(0)], mode="full")
    assert (full == 99).all()


def test_strength_outside_0_1_is_rejected():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="strength must be in"):
            img2img_start(12, bad)


def test_inpaint_start_masks_the_region_fixes_the_rest_and_scales_the_schedule():
    tokens = torch.arange(16).reshape(1, 4, 4)
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[:, :2] = True
    start = masked_start(tokens, region, 99, "inpaint mask")
    assert (start.tokens[region] == 99).all() and torch.equal(start.tokens[~region], tokens[~region])
    assert torch.equal(start.fixed, ~region) and start.starting_mask_ratio.item() == 0.5


def test_inpaint_rejects_empty_and_wrongly_sized_masks():
    tokens = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="inpaint mask is empty"):
        masked_start(tokens, torch.zeros(1, 4, 4, dtype=torch.bool), 99, "inpaint mask")
    with pytest.raises(ValueError, match="token grid"):
        masked_start(tokens, torch.ones(1, 3, 4, dtype=torch.bool), 99, "inpaint mask")

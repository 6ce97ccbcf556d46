"""The ``tcts`` sampler: keep what the selector trusts, re-mask what it flags, over all editable positions.

Checked on the tiny aMUSEd generator with constructed selectors: one whose P(changed) is high exactly on a
planted region, and small random ones.
"""
import pytest
import torch

from tcts.engine import make_generators
from tcts.sampling.registry import RULES
from tcts.sampling.step import Conditioning
from tests.engine_helpers import loop as sample, rule as make_rule
from tcts.selector import SelectorConfig, SelectorMismatchError, TokenSelector


MASK = 71
COSINE_8 = [62, 59, 53, 45, 35, 24, 12, 0]  # floor(64 * cos(pi/2 * (i+1)/8)) on an 8x8 grid


def random_selector(seed=0, text=16) -> TokenSelector:
    torch.manual_seed(seed)
    selector = TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=text, hidden_size=32, num_layers=1,
                                            num_heads=2, max_grid=(8, 8)))
    for p in selector.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return selector.eval()


def planted_selector(region: torch.Tensor) -> TokenSelector:
    """A real selector whose weights put P(changed) ≈ 1 on ``region`` (a rectangle) and ≈ 0 elsewhere.

    The block's output projections are zero (the block is the identity), tokens embed to zero, and the
    position tables put +1 on the region's rows/cols and −3 elsewhere along one feature, so that feature
    is positive exactly inside the rectangle; the final LayerNorm turns its sign into ±sqrt(d−1) and the
    head multiplies by 10.
    """
    selector = random_selector()
    rows, cols = region.any(dim=1), region.any(dim=0)
    with torch.no_grad():
        for p in selector.parameters():
            p.zero_()
        selector.norm_out.weight.fill_(1.0)
        selector.row_embed[: len(rows), 0] = torch.where(rows, 1.0, -3.0)
        selector.col_embed[: len(cols), 0] = torch.where(cols, 1.0, -3.0)
        selector.head.weight[0, 0] = 10.0
    return selector


def trajectory(model, cond, rule, steps=8, seed=0, batch=1, **kwargs):
    reports = []
    if batch > 1:
        cond = Conditioning(*(t.expand(batch, *t.shape[1:]) for t in (cond.hidden_states, cond.pooled, cond.micro_conds,
                                                                        cond.negative_hidden_states,
                                                                        cond.negative_pooled)))
    with torch.no_grad():
        final = sample(model, cond, rule, steps=steps, grid=(8, 8), generators=make_generators(seed, batch),
                       callback=reports.append, **kwargs)
    return final, reports


def test_tcts_is_a_registered_revocable_rule():
    rule = make_rule("tcts", selector=random_selector())
    assert "tcts" in RULES and rule.name == "tcts"
    assert rule.revocable and rule.attention(0, 8, {}) is None


def test_the_planted_region_is_re_masked_first(model, cond):
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 1:7] = True                                     # 24 tokens
    _, reports = trajectory(model, cond, make_rule("tcts", selector=planted_selector(region)))
    masked = [r.masked[0] for r in reports]
    assert [int(m.sum()) for m in masked] == COSINE_8
    for m in masked:
        if int(m.sum()) >= 24:
            assert m[region].all()                              # everything flagged is re-masked
        else:
            assert not m[~region].any()                         # and nothing unflagged is, until it is all gone
    assert torch.equal(masked[COSINE_8.index(24)], region)      # exactly the region when the budget equals it


def test_the_selector_reads_the_proposal_the_text_and_the_progress_after_the_step(model, cond):
    selector = random_selector()
    seen = []
    selector.register_forward_hook(lambda m, args, out: seen.append(args))
    _, reports = trajectory(model, cond, make_rule("tcts", selector=selector), steps=6)
    assert len(seen) == 5                                       # every step but the final fill
    for step, (tokens, text, t) in enumerate(seen):
        assert torch.equal(tokens, reports[step].proposal)      # x-hat with visible tokens copied, no mask ids
        assert (tokens != MASK).all()
        assert torch.equal(text, cond.hidden_states)
        assert t == pytest.approx((step + 1) / 6)


def test_keep_scores_are_one_minus_p_changed_and_kept_tokens_can_be_revoked(model, cond):
    selector = random_selector(seed=3)
    final, reports = trajectory(model, cond, make_rule("tcts", selector=selector))
    first = reports[0]
    p = selector.prob_changed(first.proposal, cond.hidden_states, 1 / 8)
    assert torch.allclose(first.scores[0], 1 - p[0])
    revoked = sum(int(((a.tokens != MASK) & (b.tokens != a.tokens)).sum()) for a, b in zip(reports, reports[1:]))
    assert revoked > 0
    assert (final != MASK).all()


@pytest.mark.parametrize("options", [{}, {"noise": 2.0}, {"choice": "multinomial", "noise": 1.0},
                                     {"guidance": 3.0}])
def test_mask_counts_follow_the_schedule_and_fixed_tokens_stay(model, cond, options):
    rule = make_rule("tcts", selector=random_selector(), **options)
    _, reports = trajectory(model, cond, rule)
    assert [int(r.masked.sum()) for r in reports] == COSINE_8
    start = torch.full((1, 8, 8), MASK)
    start[:, :3] = 5
    fixed = torch.zeros(1, 8, 8, dtype=torch.bool)
    fixed[:, :3] = True
    final, reports = trajectory(model, cond, rule, tokens=start, fixed=fixed,
                                starting_mask_ratio=(~fixed).float().mean())
    assert all((r.tokens[:, :3] == 5).all() for r in reports)
    assert (final != MASK).all()


def test_random_choices_come_from_the_per_image_generators(model, cond):
    rule = make_rule("tcts", selector=random_selector(), choice="multinomial", noise=1.5)
    batch, _ = trajectory(model, cond, rule, seed=4, batch=2)
    one, _ = trajectory(model, cond, rule, seed=4)
    two, _ = trajectory(model, cond, rule, seed=5)
    assert torch.equal(batch, torch.cat([one, two]))
    assert not torch.equal(one, two)


def test_noise_and_multinomial_change_the_choice(model, cond):
    selector = random_selector()
    plain, _ = trajectory(model, cond, make_rule("tcts", selector=selector))
    for options in ({"noise": 4.0}, {"choice": "multinomial"}):
        other, _ = trajectory(model, cond, make_rule("tcts", selector=selector, **options))
        assert not torch.equal(plain, other)


def test_bad_settings_and_mismatched_selectors_are_refused(model, cond):
    with pytest.raises(ValueError, match="the tcts sampler needs a trained selector"):
        make_rule("tcts", selector=None)
    with pytest.raises(TypeError, match="needs a TokenSelector"):
        make_rule("tcts", selector="a path")
    with pytest.raises(ValueError, match="SelectorOptions.choice 'best' is unknown"):
        make_rule("tcts", selector=random_selector(), choice="best")
    with pytest.raises(ValueError, match=r"SelectorOptions.noise must be in \[0, 10\]"):
        make_rule("tcts", selector=random_selector(), noise=-1)
    with pytest.raises(SelectorMismatchError, match="width 32 but the generator's text encoder gives width 16"):
        trajectory(model, cond, make_rule("tcts", selector=random_selector(text=32)))

"""Each strategy's defining property, checked on the tiny aMUSEd generator.

Persistent rules (purity, uniform) never change a token once it is kept; random-revoke does revoke;
every rule respects fixed positions; the last step fills everything; batches equal single runs.
"""
import pytest
import torch

from tcts.engine import make_generators
from tcts.sampling.step import Conditioning
from tests.engine_helpers import loop as sample, rule as make_rule


MASK = 71


def trajectory(model, cond, sampler, steps=8, seed=0, **kwargs):
    states = []
    with torch.no_grad():
        final = sample(model, cond, make_rule(sampler), steps=steps, grid=(8, 8),
                       generators=make_generators(seed, cond.batch_size),
                       callback=lambda r: states.append(r.tokens.clone()), **kwargs)
    return final, states


def count_revocations(states):
    """Positions that held a token after some step and were masked (or changed) after a later one."""
    revoked = 0
    for before, after in zip(states, states[1:]):
        kept = before != MASK
        revoked += int((kept & (after != before)).sum())
    return revoked


@pytest.mark.parametrize("sampler", ["purity", "uniform"])
def test_persistent_rules_never_change_a_kept_token(model, cond, sampler):
    final, states = trajectory(model, cond, sampler)
    assert count_revocations(states) == 0
    assert (final != MASK).all()


def test_random_revoke_revokes_kept_tokens(model, cond):
    final, states = trajectory(model, cond, "random-revoke")
    assert count_revocations(states) > 0
    assert (final != MASK).all()


@pytest.mark.parametrize("sampler", ["purity", "uniform", "random-revoke"])
def test_masked_count_follows_the_schedule_for_every_rule(model, cond, sampler):
    _, states = trajectory(model, cond, sampler, steps=8)
    counts = [int((s == MASK).sum()) for s in states]
    assert counts == [62, 59, 53, 45, 35, 24, 12, 0]  # floor(64 * cos(pi/2 * (i+1)/8))


@pytest.mark.parametrize("sampler", ["purity", "uniform", "random-revoke"])
def test_fixed_positions_keep_their_tokens_with_every_rule(model, cond, sampler):
    start = torch.full((1, 8, 8), MASK)
    start[:, :3] = 5
    fixed = torch.zeros(1, 8, 8, dtype=torch.bool)
    fixed[:, :3] = True
    final, states = trajectory(model, cond, sampler, tokens=start, fixed=fixed,
                               starting_mask_ratio=(~fixed).float().mean())
    for s in states:
        assert (s[:, :3] == 5).all()
    assert (final != MASK).all()


def test_random_revoke_can_repredict_visible_tokens_when_asked(model, cond):
    with torch.no_grad():
        copy = sample(model, cond, make_rule("random-revoke"), steps=6, grid=(8, 8),
                      generators=make_generators(3, 1))
        fresh = sample(model, cond, make_rule("random-revoke", repredict_visible=True), steps=6, grid=(8, 8),
                       generators=make_generators(3, 1))
    assert not torch.equal(copy, fresh)


@pytest.mark.parametrize("sampler", ["purity", "uniform", "random-revoke"])
def test_same_seed_gives_the_same_tokens_and_a_batch_equals_single_runs(model, cond, sampler):
    batch = Conditioning(cond.hidden_states.expand(2, -1, -1), cond.pooled.expand(2, -1),
                         cond.micro_conds.expand(2, -1), cond.negative_hidden_states.expand(2, -1, -1),
                         cond.negative_pooled.expand(2, -1))
    both, _ = trajectory(model, batch, sampler, seed=7)
    first, _ = trajectory(model, cond, sampler, seed=7)
    second, _ = trajectory(model, cond, sampler, seed=8)
    again, _ = trajectory(model, cond, sampler, seed=7)
    assert torch.equal(first, again)
    assert torch.equal(both[0], first[0]) and torch.equal(both[1], second[0])


def test_unknown_sampler_is_a_clear_error():
    with pytest.raises(ValueError, match="sampler 'best' is unknown"):
        make_rule("best")

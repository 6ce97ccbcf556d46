"""FAS (docs/method.md, FAS) on the tiny generators: LOW tokens are persistent, HIGH revocable, exactly
n_keep tokens kept every step, ``invert`` swaps the roles, options and registration."""
import pytest
import torch

from tcts.checkpoints import load_transformer
from tcts.engine import make_generators
from tcts.sampling.registry import RULES
from tcts.sampling.step import Conditioning
from tests.engine_helpers import loop as sample, rule as make_rule
from tcts.sampling.fas import FAS, top_count
from tcts.selector import SelectorConfig, TokenSelector

from .helpers import MEISSONIC, load_case

MASK = 71
SCHEDULE_8 = [62, 59, 53, 45, 35, 24, 12, 0]  # floor(64 * cos(pi/2 * (i+1)/8)) masked after each step


def spy(rule: FAS):
    """Record, per step, the LOW group, the new persistent picks and whether attention was captured."""
    log = []
    original = rule.select

    def select(state):
        selection = original(state)
        log.append(dict(step=state.step, low=state.extras.get(rule.key), fix=selection.fix,
                        captured=state.attention is not None, fixed_before=state.fixed.clone()))
        return selection

    rule.select = select
    return log


def run(model, cond, rule, steps=8, seed=0, **kwargs):
    states = []
    with torch.no_grad():
        final = sample(model, cond, rule, steps=steps, grid=(8, 8), generators=make_generators(seed, cond.batch_size),
                       callback=lambda r: states.append(r.tokens.clone()), **kwargs)
    return final, states


def test_low_tokens_are_never_remasked_once_kept_and_high_tokens_are_revoked(model, cond):
    rule = make_rule("fas")
    log = spy(rule)
    final, states = run(model, cond, rule)
    persistent = torch.zeros(1, 64, dtype=torch.bool)
    revoked_high = 0
    for entry, before, after in zip(log, states, states[1:]):
        fix = entry["fix"]
        assert (fix <= entry["low"]).all()                 # new persistent picks come from LOW
        assert torch.equal(entry["fixed_before"], persistent)
        persistent |= fix
        kept = before.reshape(1, -1) != MASK
        changed = after.reshape(1, -1) != before.reshape(1, -1)
        assert not (persistent & changed).any()            # a persistent token never changes again
        revoked_high += int((kept & ~persistent & changed).sum())
    assert persistent.sum() > 0 and revoked_high > 0
    assert (final != MASK).all()


def test_exactly_n_keep_tokens_are_kept_every_step(model, cond):
    for options in ({}, {"q": 0.0}, {"q": 1.0}, {"invert": True}, {"statistic": "entropy", "smooth": True},
                    {"regroup": "freeze_after", "freeze_after": 0.3}, {"low_scorer": "confidence"}):
        _, states = run(model, cond, make_rule("fas", **options))
        assert [int((s == MASK).sum()) for s in states] == SCHEDULE_8, options


def test_invert_swaps_the_roles_of_the_groups(model, cond):
    plain, inverted = make_rule("fas"), make_rule("fas", invert=True)
    logs = spy(plain), spy(inverted)
    run(model, cond, plain)
    run(model, cond, inverted)
    for entry in logs[0]:
        assert (entry["fix"] <= entry["low"]).all()
    for entry in logs[1]:
        assert (entry["fix"] <= ~entry["low"]).all()
    assert sum(int(e["fix"].sum()) for e in logs[1]) > 0


def test_q_zero_is_random_revoke_and_q_one_is_fully_persistent(model, cond):
    rr, _ = run(model, cond, make_rule("random-revoke"), seed=3)
    none_low, _ = run(model, cond, make_rule("fas", q=0.0), seed=3)
    assert torch.equal(rr, none_low)                       # no LOW token: the inner rule's picks exactly
    rule = make_rule("fas", q=1.0)
    _, states = run(model, cond, rule, seed=3)
    for before, after in zip(states, states[1:]):
        kept = before != MASK
        assert torch.equal(after[kept], before[kept])      # all LOW: nothing is ever revoked


def test_freeze_after_and_start_frac_limit_capture_and_grouping(model, cond):
    frozen = make_rule("fas", regroup="freeze_after", freeze_after=0.25)
    log = spy(frozen)
    run(model, cond, frozen)
    assert [e["captured"] for e in log] == [True, True] + [False] * 5   # steps 0, 1 < 0.25 * 8
    assert all(torch.equal(e["low"], log[1]["low"]) for e in log[2:])
    late = make_rule("fas", start_frac=0.5)
    log = spy(late)
    run(model, cond, late)
    assert [e["captured"] for e in log] == [False] * 4 + [True] * 3
    assert all(e["fix"] is None for e in log[:4]) and sum(int(e["fix"].sum()) for e in log[4:]) > 0


def test_fixed_positions_are_respected_and_batches_equal_single_runs(model, cond):
    start = torch.full((1, 8, 8), MASK)
    start[:, :3] = 5
    fixed = torch.zeros(1, 8, 8, dtype=torch.bool)
    fixed[:, :3] = True
    final, states = run(model, cond, make_rule("fas"), tokens=start, fixed=fixed,
                        starting_mask_ratio=(~fixed).float().mean())
    assert all((s[:, :3] == 5).all() for s in states) and (final != MASK).all()
    assert fixed[:, 3:].sum() == 0  # the caller's tensor is not modified
    batch = Conditioning(cond.hidden_states.expand(2, -1, -1), cond.pooled.expand(2, -1),
                         cond.micro_conds.expand(2, -1), cond.negative_hidden_states.expand(2, -1, -1),
                         cond.negative_pooled.expand(2, -1))
    both, _ = run(model, batch, make_rule("fas"), seed=7)
    first, _ = run(model, cond, make_rule("fas"), seed=7)
    second, _ = run(model, cond, make_rule("fas"), seed=8)
    assert torch.equal(both[0], first[0]) and torch.equal(both[1], second[0])


def test_the_loop_captures_the_conditional_rows_of_this_steps_forward(model, cond):
    from tcts.attention import capture_attention
    from tcts.sampling.step import guided_logits

    rule = make_rule("fas")
    seen = []
    original = rule.select
    rule.select = lambda state: seen.append((state.tokens.clone(), state.attention)) or original(state)
    run(model, cond, rule, steps=4)
    positive = Conditioning(cond.hidden_states, cond.pooled, cond.micro_conds)
    for step, (tokens, attention) in enumerate(seen):
        with capture_attention(model, kinds="self") as acc, torch.no_grad():
            guided_logits(model, tokens.view(1, 8, 8), positive, 1.0, 3 - step)
        assert torch.allclose(attention.self_attention, acc.result().self_attention, atol=1e-6)


def test_fas_runs_on_meissonic():
    model = load_transformer(MEISSONIC / "transformer")
    ref = load_case(MEISSONIC / "cases" / "c3_grid8x8_allmask_t47_clip.safetensors")
    hidden, pooled = ref["encoder_hidden_states"], ref["pooled_projections"]
    cond = Conditioning(hidden[1:], pooled[1:], ref["micro_conds"][1:], hidden[:1], pooled[:1])
    rule = make_rule("fas")
    log = spy(rule)
    final, states = run(model, cond, rule, steps=6)
    assert (final != MASK).all() and len(log) == 5 and all(e["captured"] for e in log)
    assert [int((s == MASK).sum()) for s in states][-1] == 0


def test_tcts_fas_wraps_the_learned_selector(model, cond):
    assert {"fas", "tcts-fas"} <= set(RULES)
    with pytest.raises(ValueError, match="tcts-fas sampler needs a trained selector"):
        make_rule("tcts-fas")
    torch.manual_seed(0)
    selector = TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                            num_heads=2, max_grid=(8, 8))).eval()
    rule = make_rule("tcts-fas", selector=selector, noise=0.5, q=0.5)
    assert rule.inner.name == "tcts" and rule.inner.options.noise == 0.5 and rule.options.q == 0.5
    assert rule.name == "tcts-fas"
    log = spy(rule)
    final, states = run(model, cond, rule)
    assert [int((s == MASK).sum()) for s in states] == SCHEDULE_8
    assert sum(int(e["fix"].sum()) for e in log) > 0 and (final != MASK).all()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="FASOptions.statistic 'median' is unknown"):
        make_rule("fas", statistic="median")
    with pytest.raises(ValueError, match="FASOptions.regroup 'sometimes' is unknown"):
        make_rule("fas", regroup="sometimes")
    with pytest.raises(ValueError, match=r"FASOptions.q must be in \[0, 1\]"):
        make_rule("fas", q=2)
    with pytest.raises(ValueError, match="needs a revocable inner rule"):
        FAS(make_rule("purity"))


def test_top_count_picks_the_best_candidates_per_row():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    candidates = torch.tensor([[True, False, True, True], [True, True, True, True]])
    picked = top_count(scores, candidates, torch.tensor([2, 1]))
    assert picked.tolist() == [[False, False, True, True], [True, False, False, False]]

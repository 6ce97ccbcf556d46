"""The defining behaviour of the samplers added after the paper (docs/method.md, Samplers added after the paper),
on the tiny aMUSEd generator: Halton's order depends only on the grid; ReMDM re-masks only decoded tokens, at
the scheduled rate; entropy-bounded adapts its count under the budget and can end early; noise regularisation
with zero noise is Purity token for token."""
import math

import pytest
import torch

from tcts.engine import make_generators
from tcts.sampling.entropy_bounded import EntropyBounded, EntropyBoundedOptions, entropy_and_proxy, entropy_bounded_count
from tcts.sampling.fas import FAS
from tcts.sampling.halton import Halton, HaltonOptions, halton_order, halton_points_needed
from tcts.sampling.noise_regularized import NoiseRegularized, NoiseRegularizedOptions, noise_level
from tcts.sampling.registry import RULES, RuleOptions, make_rule
from tcts.sampling.remdm import ReMDM, ReMDMOptions
from tcts.sampling.rules import Purity, Rule, StepState
from tcts.sampling.schedules import tokens_to_mask
from tcts.sampling.step import Conditioning
from tests.engine_helpers import loop as sample

MASK = 71
SCHEDULE_8 = [62, 59, 53, 45, 35, 24, 12, 0]  # floor(64 * cos(pi/2 * (i+1)/8)) masked after each step


class Recorder(Rule):
    """Runs ``inner`` and records what each step's rule saw and chose."""

    def __init__(self, inner: Rule) -> None:
        self.inner, self.name, self.revocable, self.steps = inner, inner.name, inner.revocable, []

    @property
    def repredict_visible(self) -> bool:
        return self.inner.repredict_visible

    def attention(self, step, steps, memory):
        return self.inner.attention(step, steps, memory)

    def select(self, state):
        selection = self.inner.select(state)
        self.steps.append(dict(step=state.step, probs=state.probs.clone(), unknown=state.unknown.clone(),
                               fixed=state.fixed.clone(), mask_count=state.mask_count.clone(),
                               keep=selection.keep.clone(), prob=state.proposal_prob.clone()))
        return selection


def run(model, cond, rule, steps=8, seed=0, grid=(8, 8), **kwargs):
    states, proposals = [], []

    def callback(report):
        states.append(report.tokens.clone())
        proposals.append(report.proposal.clone())

    with torch.no_grad():
        final = sample(model, cond, rule, steps=steps, grid=grid, generators=make_generators(seed, cond.batch_size),
                       callback=callback, **kwargs)
    return final, states, proposals


def pair(cond) -> Conditioning:
    return Conditioning(cond.hidden_states.expand(2, -1, -1), cond.pooled.expand(2, -1), cond.micro_conds.expand(2, -1),
                        cond.negative_hidden_states.expand(2, -1, -1), cond.negative_pooled.expand(2, -1))


def revocations(states) -> int:
    return sum(int(((before != MASK) & (after != before)).sum()) for before, after in zip(states, states[1:]))


# --- Halton -------------------------------------------------------------------------------------------------

def test_the_halton_order_covers_every_cell_in_the_papers_sequence():
    assert halton_order(4, 4).tolist()[:4] == [9, 6, 12, 1]  # (1/2, 1/3), (1/4, 2/3), (3/4, 1/9), (1/8, 4/9)
    for h, w in ((16, 16), (32, 32), (64, 64), (8, 6), (3, 7)):
        assert sorted(halton_order(h, w).tolist()) == list(range(h * w))
    # the public code's fixed 10,000 points reach every cell up to 48 x 48 but not 64 x 64
    assert [halton_points_needed(n, n) for n in (16, 32, 64, 128)] == [685, 2292, 10363, 37890]


def test_halton_keeps_the_next_cells_of_the_order_whatever_the_logits(model, cond):
    other = Conditioning(cond.hidden_states.flip(1), cond.pooled.flip(1), cond.micro_conds, None, None)
    for grid in ((8, 8), (8, 6)):
        order = halton_order(*grid)
        runs = [run(model, c, make_rule("halton"), seed=s, grid=grid, cfg=g) for c, s, g in
                ((cond, 0, 10.0), (cond, 5, 10.0), (other, 1, 1.0))]
        n = grid[0] * grid[1]
        for _, states, _ in runs:
            for step, tokens in enumerate(states):
                decoded = torch.zeros(n, dtype=torch.bool)
                decoded[order[:n - int((tokens == MASK).sum())]] = True
                assert torch.equal((tokens != MASK).reshape(-1), decoded), (grid, step)
            assert revocations(states) == 0 and (states[-1] != MASK).all()
        assert not torch.equal(runs[0][0], runs[1][0])  # the seed sets the tokens, not the positions


def test_halton_roll_shifts_each_images_order_by_its_seed(model, cond):
    order = halton_order(8, 8)
    both, states, _ = run(model, pair(cond), Halton(HaltonOptions(roll=True)), seed=3)
    offsets = []
    for image in range(2):
        decoded = (states[0][image] != MASK).reshape(-1)
        count = int(decoded.sum())
        starts = [o for o in range(64) if decoded[order.roll(-o)[:count]].all()]
        assert len(starts) == 1
        offsets.append(starts[0])
    assert offsets[0] != offsets[1]
    single, _, _ = run(model, cond, Halton(HaltonOptions(roll=True)), seed=4)
    assert torch.equal(both[1], single[0])


# --- ReMDM --------------------------------------------------------------------------------------------------

def expected_remask(variant: str, eta: float, step: int, steps: int, decoded: int, masked_after: int,
                    t_on: float = 0.55, t_off: float = 0.05) -> int:
    """R = round(sigma * D), sigma from the variant (docs/method.md, ReMDM), written out independently:
    sigma_max * D = min(D, m)."""
    most = min(decoded, masked_after)
    t = 1 - step / steps
    rate = {"cap": min(eta * decoded, most), "rescale": eta * most,
            "loop": min(eta * decoded, most) if t_off < t <= t_on else 0.0}[variant]
    return round(rate)


@pytest.mark.parametrize("variant,eta", [("cap", 0.05), ("cap", 0.3), ("rescale", 0.5), ("loop", 0.2)])
def test_remdm_remasks_only_decoded_tokens_at_the_scheduled_rate(model, cond, variant, eta):
    steps = 10
    rule = Recorder(ReMDM(ReMDMOptions(variant=variant, eta=eta)))
    final, states, _ = run(model, cond, rule, steps=steps)
    masks = [torch.ones(1, 8, 8, dtype=torch.bool)] + [s == MASK for s in states]
    remasked_total = 0
    for step, record in enumerate(rule.steps):
        before, after = masks[step], masks[step + 1]
        decoded = int((~before).sum())
        m = int(tokens_to_mask("cosine", step, steps, 64, torch.tensor([64])).item())
        assert int(after.sum()) == m  # the schedule's count, as every rule
        remasked = ~before & after
        assert int(remasked.sum()) == expected_remask(variant, eta, step, steps, decoded, m), step
        kept = ~before & ~after
        assert torch.equal(states[step][kept], (states[step - 1] if step else states[step])[kept])
        remasked_total += int(remasked.sum())
    assert remasked_total > 0 and (final != MASK).all()


def test_remdm_remasks_the_least_probable_decoded_tokens_or_random_ones():
    n, k = 12, 5
    probs = torch.full((1, n, k), 0.01)
    tokens = torch.tensor([[MASK] * 4 + [0, 1, 2, 3, 0, 1, 2, 3]])
    proposal = torch.where(tokens == MASK, 4, tokens)
    for i, p in enumerate([0.5, 0.5, 0.5, 0.5, 0.9, 0.2, 0.8, 0.1, 0.7, 0.3, 0.95, 0.6]):
        probs[0, i, proposal[0, i]] = p
    state = StepState(step=2, steps=4, tokens=tokens, proposal=proposal, probs=probs, unknown=tokens == MASK,
                      fixed=torch.zeros(1, n, dtype=torch.bool), mask_count=torch.tensor([[4.0]]),
                      choice_temperature=torch.tensor(0.0), generators=make_generators(0, 1), grid=(3, 4))
    keep = ReMDM(ReMDMOptions(eta=0.25)).select(state).keep[0]  # sigma = min(0.25, 4/8): R = 2 of D = 8
    assert (~keep[4:]).nonzero()[:, 0].add(4).tolist() == [5, 7]  # probabilities 0.2 and 0.1
    assert int(keep[:4].sum()) == 2  # 4 masked - 4 + R new tokens kept
    random = ReMDM(ReMDMOptions(eta=0.25, choice="random")).select(state).keep[0]
    assert int((~random[4:]).sum()) == 2 and int(random[:4].sum()) == 2


def test_remdm_is_revocable_and_fas_wraps_it(model, cond):
    assert make_rule("remdm").revocable and RULES["remdm"].kind == "revocable"
    rule = make_rule("fas-remdm", RuleOptions(remdm=ReMDMOptions(eta=0.3)))
    assert isinstance(rule, FAS) and isinstance(rule.inner, ReMDM) and rule.name == "fas-remdm"
    final, states, _ = run(model, cond, rule)
    assert [int((s == MASK).sum()) for s in states] == SCHEDULE_8
    assert (final != MASK).all()


def test_remdm_options_are_checked():
    with pytest.raises(ValueError, match="ReMDMOptions.variant 'fast' is unknown"):
        ReMDMOptions(variant="fast")
    with pytest.raises(ValueError, match="t_off"):
        ReMDMOptions(t_on=0.2, t_off=0.5)


# --- entropy-bounded ----------------------------------------------------------------------------------------

def test_the_entropy_budget_takes_the_longest_prefix_and_at_least_one():
    entropy = torch.tensor([[3.0, 0.1, 0.5, 0.2, 9.0]])
    candidates = torch.tensor([[True, True, True, True, False]])
    count, ranks = entropy_bounded_count(entropy, entropy, candidates, 0.35)
    assert count.tolist() == [3]  # 0.1, 0.2, 0.5: 0.8 - 0.5 = 0.3; with 3.0: 3.8 - 3.0 = 0.8 > 0.35
    assert ranks[0, :4].tolist() == [3, 0, 2, 1]
    assert entropy_bounded_count(entropy, entropy, candidates, 0.0)[0].tolist() == [1]
    probs = torch.tensor([[[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.6, 0.4, 0.0]]])
    h, conf = entropy_and_proxy(probs, "confidence")
    assert torch.allclose(h[0, 0], torch.tensor(math.log(2))) and conf.argmin().item() == 1
    _, margin = entropy_and_proxy(probs, "margin")
    assert margin[0].tolist() == pytest.approx([0.0, -0.85, -0.2])


def test_entropy_bounded_adapts_its_count_within_the_budget_and_ends_early(model, cond):
    for gamma in (8.0, 20.0):
        rule = Recorder(EntropyBounded(EntropyBoundedOptions(gamma=gamma)))
        final, states, _ = run(model, cond, rule, steps=8)
        assert (final != MASK).all() and revocations(states) == 0
        counts, above = [], False
        for record in rule.steps:
            unknown = record["unknown"][0]
            committed = record["keep"][0] & unknown
            c, u = int(committed.sum()), int(unknown.sum())
            scheduled = u - int(record["mask_count"].item())
            entropy, _ = entropy_and_proxy(record["probs"], "entropy")
            ordered = entropy[0][unknown].sort().values
            assert torch.equal(entropy[0][committed].sort().values, ordered[:c])  # the most certain first
            eb = max(k for k in range(1, u + 1) if k == 1 or float(ordered[:k].sum() - ordered[:k].max()) <= gamma)
            assert c == min(max(eb, scheduled), u)  # the budget's count, never below the schedule's
            counts.append(c)
            above |= c > scheduled
        assert above and len(set(counts)) > 2  # the count adapts, and exceeds the schedule's
        assert len(states) < 8 if gamma == 20.0 else len(states) == 8  # a large budget ends the run early


def test_entropy_bounded_never_takes_more_passes_than_steps(model, cond):
    _, states, _ = run(model, cond, EntropyBounded(EntropyBoundedOptions(gamma=0.0)), steps=8)
    assert [int((s == MASK).sum()) for s in states] == SCHEDULE_8  # gamma 0: one token, the schedule wins


# --- noise regularisation -----------------------------------------------------------------------------------

def test_the_noise_schedule_is_the_papers_u_shape():
    assert noise_level(0, 9) == pytest.approx(2.0) and noise_level(8, 9) == pytest.approx(2.0)
    assert noise_level(4, 9) == pytest.approx(0.0, abs=1e-12) and noise_level(2, 9) == pytest.approx(2 ** 0.5)
    assert noise_level(0, 1) == 0.0


def test_zero_noise_is_purity_token_for_token(model, cond):
    purity = run(model, pair(cond), Purity(), seed=2)
    quiet = run(model, pair(cond), NoiseRegularized(NoiseRegularizedOptions(noise_scale=0.0)), seed=2)
    for a, b in zip(purity[1] + purity[2], quiet[1] + quiet[2]):
        assert torch.equal(a, b)
    assert len(purity[1]) == len(quiet[1])


def test_noise_changes_which_tokens_are_kept_not_the_first_draw(model, cond):
    _, purity, purity_draws = run(model, cond, Purity(), seed=2)
    final, noisy, noisy_draws = run(model, cond, NoiseRegularized(NoiseRegularizedOptions(noise_scale=3.0)), seed=2)
    assert torch.equal(purity_draws[0], noisy_draws[0])
    assert not torch.equal(purity[0] == MASK, noisy[0] == MASK)
    assert [int((s == MASK).sum()) for s in noisy] == SCHEDULE_8
    assert revocations(noisy) == 0 and (final != MASK).all()


# --- all of them --------------------------------------------------------------------------------------------

NEW = ["halton", "remdm", "fas-remdm", "entropy-bounded", "noise-regularized"]


@pytest.mark.parametrize("sampler", NEW)
def test_fixed_positions_keep_their_tokens_and_a_batch_equals_single_runs(model, cond, sampler):
    start = torch.full((1, 8, 8), MASK)
    start[:, :3] = 5
    fixed = torch.zeros(1, 8, 8, dtype=torch.bool)
    fixed[:, :3] = True
    final, states, _ = run(model, cond, make_rule(sampler), tokens=start, fixed=fixed,
                           starting_mask_ratio=(~fixed).float().mean(), grid=None)
    assert all((s[:, :3] == 5).all() for s in states) and (final != MASK).all()
    both, _, _ = run(model, pair(cond), make_rule(sampler), seed=7)
    first, _, _ = run(model, cond, make_rule(sampler), seed=7)
    second, _, _ = run(model, cond, make_rule(sampler), seed=8)
    assert torch.equal(both[0], first[0]) and torch.equal(both[1], second[0])

"""The PRM prefix cache (openr.prm.causal_lm): scores as a full forward pass
gives them, while the model runs only over what is new."""

import random

import pytest
import torch

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, PRM_SUBDIR
from openr.prm import StepTagPRM, load_prm, tag_margins
from openr.prm.step_tag import encode_steps
from openr.tasks import arith
from openr.tasks.problem import split_steps

VERIFIER = BUILTIN_BUNDLES[ARITH_ALIAS] / PRM_SUBDIR

pytestmark = pytest.mark.usefixtures("one_thread")


def _beam_rounds(problem, rounds: int = 3, children: int = 3, seed: int = 0):
    """Calls shaped like a beam search's: each round, `children` next steps for
    each kept candidate (the right step, then wrong ones), and two kept for the
    next round: a right child and a wrong one."""
    rng = random.Random(seed)
    gold = split_steps(problem.solution)

    def wrong(depth: int) -> str:
        if depth < problem.level:  # a result step: corrupt its number
            return split_steps(arith.corrupt_step(problem.solution, depth, rng))[depth]
        return gold[depth] + " (checked)"

    kept, calls = [[]], []
    for depth in range(min(rounds, len(gold))):
        call = [steps + [gold[depth] if child == 0 else wrong(depth)] for steps in kept for child in range(children)]
        calls.append(call)
        kept = call[:2]
    return calls


def _problems():
    return [p for p in arith.test_split() if p.level >= 3][:3]


def test_cached_scores_equal_full_forward_passes_and_only_new_tokens_run():
    cached, full = load_prm(VERIFIER), load_prm(VERIFIER, cache_mb=0)
    assert cached.cache.enabled and not full.cache.enabled
    for problem in _problems():
        for depth, candidates in enumerate(_beam_rounds(problem)):
            pairs = [(problem.question, steps) for steps in candidates]
            before = cached.forwarded_tokens
            got, expected = cached.score_batch(pairs), full.score_batch(pairs)
            for row, want in zip(got, expected):
                assert row == pytest.approx(want, abs=1e-5)
            rows = [cached.encode(q, steps) for q, steps in pairs]
            if depth == 0:  # the shared prompt runs once, then each candidate's own step
                new = rows[0].cuts[0] + sum(len(r.ids) - r.cuts[0] for r in rows)
            else:  # every parent was scored last round: only the last step runs
                new = sum(len(r.ids) - r.cuts[-2] for r in rows)
                assert new < sum(len(r.ids) for r in rows) / 4
            assert cached.forwarded_tokens - before == new
    # 7,670 tokens without the cache against 1,005 with it on these calls (7.6x; the counts are exact,
    # as the calls and the character tokenizer are fixed): the README quotes this bound
    assert full.forwarded_tokens > 7.5 * cached.forwarded_tokens


def test_a_repeated_call_runs_nothing_and_clearing_runs_it_again():
    prm = load_prm(VERIFIER)
    problem = _problems()[0]
    pairs = [(problem.question, split_steps(problem.solution))]
    first = prm.score_batch(pairs)
    ran = prm.forwarded_tokens
    assert prm.score_batch(pairs) == first and prm.forwarded_tokens == ran
    prm.cache.clear()
    assert len(prm.cache) == 0 and prm.cache.nbytes == 0
    assert prm.score_batch(pairs)[0] == pytest.approx(first[0], abs=1e-6) and prm.forwarded_tokens == 2 * ran


def test_a_small_budget_evicts_but_never_changes_a_score():
    budget_mb = 0.5
    small, full = load_prm(VERIFIER, cache_mb=budget_mb), load_prm(VERIFIER, cache_mb=0)
    for problem in _problems():
        for candidates in _beam_rounds(problem, rounds=4):
            pairs = [(problem.question, steps) for steps in candidates]
            for row, want in zip(small.score_batch(pairs), full.score_batch(pairs)):
                assert row == pytest.approx(want, abs=1e-5)
            assert small.cache.nbytes <= budget_mb * 2**20
    # the budget held fewer entries than were made: the first problem's prompt is gone
    first = _problems()[0]
    assert small.cache.longest(small.encode(first.question, split_steps(first.solution)))[1] is None


def test_mixed_hits_in_one_batch_pad_their_prefixes_correctly():
    """Rows whose cached prefixes differ in length share one padded forward pass."""
    cached, full = load_prm(VERIFIER, forward_batch_size=32), load_prm(VERIFIER, cache_mb=0)
    problems = _problems()
    for problem in problems:  # cache a different depth per problem
        steps = split_steps(problem.solution)
        cached.score_batch([(problem.question, steps[: problem.level - 1])])
    pairs = [(p.question, split_steps(p.solution)[:k]) for p in problems for k in range(1, p.level + 2)]
    for row, want in zip(cached.score_batch(pairs), full.score_batch(pairs)):
        assert row == pytest.approx(want, abs=1e-5)


def test_step_tag_prm_reads_the_trained_position_through_the_cache(tiny_bundle):
    prm = load_prm(tiny_bundle[0] / "prm-step-tag")
    assert isinstance(prm, StepTagPRM)
    problem = _problems()[0]
    for candidates in _beam_rounds(problem):
        pairs = [(problem.question, steps) for steps in candidates]
        scores = prm.score_batch(pairs)
        for (question, steps), row in zip(pairs, scores):
            ids, positions = encode_steps(prm.tokenizer, question, steps, prm.tag_id)
            input_ids = torch.tensor([ids])
            mask = torch.zeros_like(input_ids, dtype=torch.bool)
            mask[0, positions] = True
            with torch.no_grad():  # what training reads: unpadded, no cache
                margins = tag_margins(prm.model, input_ids, torch.ones_like(input_ids), mask, prm.label_ids)
            assert row == pytest.approx(torch.sigmoid(margins).tolist(), abs=1e-5)

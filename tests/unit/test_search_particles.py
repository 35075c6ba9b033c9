"""Particle filtering (weights, seeded resampling, the search) and beam search's
sampling of identical beams as one prefix, against a fake policy and a fake PRM."""

from __future__ import annotations

import math
import random

import pytest

from openr.contracts import Step
from openr.search import Budget, SearchConfigError, parse_search
from openr.search.candidates import Candidate
from openr.search.strategies.beam_search import BeamSearchConfig, collapse
from openr.search.strategies.particle_filtering import (
    ParticleFilteringConfig,
    filter_from,
    resample,
    resampling_weights,
)
from tests.support.search_fakes import PROBLEM, TOKENS_PER_STEP, FakePolicy, FakePRM, path_of, run, tree_step

pytestmark = pytest.mark.anyio


def particle(name: str, score: float | None) -> Candidate:
    return Candidate(steps=(name,), step_scores=() if score is None else (score,))


def test_weights_are_a_softmax_of_the_latest_step_score_over_the_temperature():
    weights = resampling_weights([particle("a", 0.9), particle("b", 0.1)], temperature=0.2)
    assert math.isclose(weights[0], 1 / (1 + math.exp(-4)))  # e**4.5 / (e**4.5 + e**0.5)
    assert math.isclose(sum(weights), 1.0)
    flat = resampling_weights([particle("a", 0.9), particle("b", None)], temperature=10.0)
    assert math.isclose(flat[0] / flat[1], math.exp(0.09))  # hot: nearly uniform; unscored counts as 0


def test_seeded_resampling_repeats_and_never_draws_a_weightless_particle():
    particles = [particle(name, 0.5) for name in "abcd"]
    weights = [0.5, 0.0, 0.25, 0.25]
    first = resample(particles, weights, random.Random(7))
    assert first == resample(particles, weights, random.Random(7))
    assert len(first) == 4 and particles[1] not in first
    draws = [p.steps[0] for _ in range(200) for p in resample(particles, weights, random.Random(_))]
    assert 0.4 < draws.count("a") / len(draws) < 0.6  # 800 draws of a weight-0.5 particle
    assert resample(particles, [0, 0, 1, 0], random.Random(1)) == [particles[2]] * 4


async def test_particles_grow_one_step_per_round_and_end_finished():
    config = ParticleFilteringConfig(n=4, seed=3, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=3)), FakePRM(lambda step: 0.5)
    result = await run("particle_filtering", config, policy, prm)
    assert [(len(call["prefixes"]), call["n"]) for call in policy.calls] == [(4, 1)] * 3
    assert len(prm.calls) == 3 and all(c.finished and len(c.steps) == 3 for c in result.candidates)
    assert result.tokens_generated == 4 * 3 * TOKENS_PER_STEP
    again = await run("particle_filtering", config, FakePolicy(tree_step(eos_depth=3)), FakePRM(lambda s: 0.5))
    assert [c.steps for c in again.candidates] == [c.steps for c in result.candidates]


async def test_resampling_moves_every_particle_onto_the_branch_the_prm_trusts():
    config = ParticleFilteringConfig(n=4, resample_temperature=0.01, seed=0)
    policy = FakePolicy(tree_step(eos_depth=3))
    prm = FakePRM(lambda step: 1.0 if step.startswith("r.2") else 0.0)
    await run("particle_filtering", config, policy, prm)
    assert {path_of(prefix) for prefix in policy.calls[1]["prefixes"]} == {("r.2",)}


async def test_a_start_population_takes_places_of_the_n_and_its_finished_particles_are_not_extended():
    done = [Candidate(steps=(f"s{i}",), step_scores=(0.5,), tokens=TOKENS_PER_STEP, finished=True) for i in range(3)]
    config = ParticleFilteringConfig(n=5, seed=3)
    policy, prm = FakePolicy(tree_step(eos_depth=1)), FakePRM(lambda step: 0.5)
    result = await filter_from(PROBLEM, policy, prm, config, Budget(), done)
    assert [(len(call["prefixes"]), call["n"]) for call in policy.calls] == [(2, 1)]  # only the 2 empty places
    assert result.tokens_generated == 2 * TOKENS_PER_STEP and len(result.candidates) == 5
    assert all(c.finished and len(c.steps) == 1 for c in result.candidates)  # none grew past its end


@pytest.mark.parametrize(("options", "field"), [
    ({"strategy": "particle_filtering", "resample_temperature": 0}, "resample_temperature"),
    ({"strategy": "particle_filtering", "n": 0}, "n"),
    ({"strategy": "particle_filtering", "beam_width": 2}, "beam_width"),
])
def test_bad_particle_options_are_named(options, field):
    with pytest.raises(SearchConfigError) as err:
        parse_search(options)
    assert err.value.field == field


# Beam search: identical beams collapse


def test_collapse_counts_repeats_up_to_whitespace_and_keeps_order():
    a, a_spaced, b = Candidate(steps=("x", "y")), Candidate(steps=(" x", "y \n")), Candidate(steps=("x", "z"))
    assert collapse([a, a_spaced, b, a]) == [(a, 3), (b, 1)]


def first_steps(path: tuple[str, ...], sample_id: int) -> Step:
    """Depth 0: samples 0-2 write "good", 3 writes "ok", the rest "bad <id>"; then every path ends."""
    if path:
        return Step("done", TOKENS_PER_STEP, "eos", 0.0)
    text = "good" if sample_id < 3 else "ok" if sample_id == 3 else f"bad {sample_id}"
    return Step(text, TOKENS_PER_STEP, "step", 0.0)


SCORES = {"good": 0.9, "ok": 0.8, "done": 0.9}


async def test_identical_beams_are_one_prefix_with_the_samples_of_all_their_copies():
    # 8 first steps, 4 beams of 2 samples each: the best 4 are good, good, good, ok.
    policy = FakePolicy(first_steps)
    result = await run("beam_search", BeamSearchConfig(n=8, beam_width=4), policy,
                       FakePRM(lambda step: SCORES.get(step, 0.1)))
    # good's 3 copies are one prefix sampled 3 x 2 times; ok is sampled twice: as many
    # samples per prefix as keeping the copies, each prefix sent once.
    calls = [(call["prefixes"], call["n"]) for call in policy.calls[1:]]
    assert [(len(prefixes), n) for prefixes, n in calls] == [(1, 6), (1, 2)]
    assert calls[0][0][0].endswith("good\n\n") and calls[1][0][0].endswith("ok\n\n")
    assert result.candidates[0].steps == ("good", "done")


async def test_the_copies_of_the_best_step_keep_their_slots():
    # Forcing distinct beams would keep good, ok, bad 4, bad 5 and spend half the samples on bad steps.
    policy = FakePolicy(first_steps)
    await run("beam_search", BeamSearchConfig(n=8, beam_width=4), policy, FakePRM(lambda step: SCORES.get(step, 0.1)))
    prefixes = [prefix for call in policy.calls[1:] for prefix in call["prefixes"]]
    assert not any("bad" in prefix for prefix in prefixes)
    assert sum(len(call["prefixes"]) * call["n"] for call in policy.calls[1:]) == 8

"""The RL recipe on the shipped openr-arith policy (0.8M parameters): the
trainer sees the log-probs the engine sampled with, the first update starts at
ratio 1, a critic fits, gradients accumulate, expert iteration keeps only
verified-correct samples, and dynamic sampling and the edge of competence
choose the questions they say they do."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest
import torch

from openr.contracts import Step
from openr.engine.checkpoints import split_bundle
from openr.engine.hf_engine import HFEngine
from openr.rl.config import RLConfig
from openr.rl.losses import token_view
from openr.rl.rollout import encode_episodes, run_solutions
from openr.rl.trainer import RLRun, draw_problems, has_signal
from openr.tasks import arith

POLICY, _ = split_bundle("openr-arith")
POOL = arith.train_problems(16, seed=5, min_ops=2, max_ops=3)
HELD_OUT = arith.test_split()[:2]
CONFIG = RLConfig(questions_per_iteration=2, group_size=4, minibatch_size=8, kl_coef=0.0, warmup_iterations=1,
                  max_steps=8, seed=3)


class Recorder:
    """The engine, with every whole-solution sample it returned kept."""

    def __init__(self, engine):
        self.engine, self.samples = engine, []

    async def generate_steps(self, *args, **kwargs):
        out = await self.engine.generate_steps(*args, **kwargs)
        self.samples += [steps[0] for steps in out]
        return out


async def sampled_episodes(run: RLRun, problems, seed: int):
    engine = HFEngine.for_model(run.model, run.tokenizer)
    await engine.start()
    try:
        recorder = Recorder(engine)
        envs = run.make_envs(len(problems) * run.config.group_size)
        envs.reset([p for p in problems for _ in range(run.config.group_size)])
        run.model.eval()
        episodes = await run_solutions(envs, recorder, run.config.temperature, seed=seed)
    finally:
        await engine.close()
    return episodes, recorder.samples


def test_the_trainer_reads_the_log_probs_the_engine_sampled_with(tmp_path):
    run = RLRun(CONFIG, POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes, samples = asyncio.run(sampled_episodes(run, POOL[:4], seed=7))
    whole = [(e, s) for e, s in zip(episodes, samples)
             if s.finish_reason == "eos" and "\n\n".join(a.text for a in e.actions) == s.text]
    assert len(whole) >= 8  # most samples are whole solutions the environment played to the end
    batch = encode_episodes([e for e, _ in whole], run.tokenizer, run.pad_id)
    with torch.no_grad():
        view = token_view(run.model, batch, temperature=1.0)
    trainer = (view.logprobs * view.mask).sum(1)
    engine = torch.tensor([s.logprob for _, s in whole])
    assert torch.allclose(trainer, engine, atol=1e-3), (trainer - engine).abs().max()


async def scripted(run: RLRun, problem, count: int, right: int):
    """`count` episodes of `problem`: the first `right` its gold solution, the rest with a wrong answer."""
    gold = problem.solution
    wrong = gold.rsplit("\\boxed{", 1)[0] + "\\boxed{" + str(int(problem.answer) + 1) + "}"

    class Scripted:
        async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
            return [[Step(gold if i < right else wrong, 0, "eos", 0.0)] for i in range(len(prefixes))]

    envs = run.make_envs(count)
    envs.reset([problem] * count)
    return await run_solutions(envs, Scripted(), 1.0)


def gold_and_wrong(run: RLRun, problem, count: int, right: int | None = None):
    return asyncio.run(scripted(run, problem, count, count // 2 if right is None else right))


def test_the_first_minibatch_starts_at_ratio_one_and_clips_nothing(tmp_path):
    run = RLRun(dataclasses.replace(CONFIG, minibatch_size=16), POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes = gold_and_wrong(run, POOL[0], 4) + gold_and_wrong(run, POOL[1], 4)
    assert has_signal(episodes[:4]) and has_signal(episodes[4:])
    metrics = run.update(episodes, iteration=0)  # one minibatch, one epoch: the first pass
    assert metrics["clipfrac"] == 0.0 and metrics["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["policy_loss"] != 0.0 and -1.0 <= metrics["gradient_signal"] <= 1.0


def test_the_critic_fits_a_fixed_set(tmp_path):
    config = dataclasses.replace(CONFIG, algo="ppo", critic_warmup_iterations=100, value_learning_rate=1e-2,
                                 minibatch_size=16, gradient_signal=False)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    before = [p.detach().clone() for p in run.model.parameters()]
    # returns a critic can predict from the question: four always right, four always wrong
    episodes = [e for i, p in enumerate(POOL[:8]) for e in gold_and_wrong(run, p, 2, right=2 if i < 4 else 0)]
    history = [run.update(episodes, iteration=i)["explained_variance"] for i in range(12)]
    assert history[-1] > 0.5 and history[-1] > history[0]
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # warm-up: the policy waits


def test_gradients_accumulate_to_one_optimizer_step_per_optimizer_batch(tmp_path):
    steps = []

    def counting_adam(model, config):
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        real_step = optimizer.step
        optimizer.step = lambda *a, **k: (steps.append(1), real_step(*a, **k))[1]
        return optimizer

    for optimizer_batch, expected in ((0, 4), (8, 2), (16, 1)):
        steps.clear()
        config = dataclasses.replace(CONFIG, minibatch_size=4, optimizer_batch_size=optimizer_batch,
                                     gradient_signal=False)
        run = RLRun(config, POLICY, None, tmp_path / str(optimizer_batch), POOL, HELD_OUT,
                    make_optimizer=counting_adam)
        run.update([e for p in POOL[:4] for e in gold_and_wrong(run, p, 4)], iteration=0)
        assert len(steps) == expected


def test_expert_iteration_fine_tunes_on_verified_correct_samples_only(tmp_path):
    config = dataclasses.replace(CONFIG, algo="expert-iteration", update_epochs=2)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes = gold_and_wrong(run, POOL[0], 4)
    right = [e for e in episodes if e.correct]

    def nll() -> float:
        batch = encode_episodes(right[:1], run.tokenizer, run.pad_id)
        with torch.no_grad():
            view = token_view(run.model, batch, temperature=1.0)
        return float(-(view.logprobs * view.mask).sum())

    before = nll()
    metrics = run.update(episodes, iteration=0)
    assert metrics["accepted"] == 1  # two samples of the gold solution, one distinct; the wrong ones dropped
    assert nll() < before
    assert "gradient_signal" not in metrics  # one accepted sample: no two halves to compare


def test_expert_iterations_gradient_signal_compares_two_halves_of_the_accepted_samples(tmp_path):
    from openr.rl.update import nll_gradient_signal

    run = RLRun(dataclasses.replace(CONFIG, algo="expert-iteration"), POLICY, None, tmp_path, POOL, HELD_OUT)
    same = encode_episodes([e for e in gold_and_wrong(run, POOL[0], 2, right=2)], run.tokenizer, run.pad_id)
    assert nll_gradient_signal(run, same) == pytest.approx(1.0, abs=1e-3)  # the same solution in both halves
    mixed = encode_episodes([e for p in POOL[:4] for e in gold_and_wrong(run, p, 1, right=1)], run.tokenizer,
                            run.pad_id)
    assert -1.0 <= nll_gradient_signal(run, mixed) < 0.99
    assert all(p.grad is None for p in run.model.parameters())  # measuring leaves no gradient behind
    metrics = run.update([e for p in POOL[:4] for e in gold_and_wrong(run, p, 1, right=1)], iteration=0)
    assert metrics["accepted"] == 4 and -1.0 <= metrics["gradient_signal"] <= 1.0


def test_expert_iteration_with_a_step_filter_drops_right_answers_whose_steps_the_prm_doubts(tmp_path):
    with pytest.raises(ValueError, match="reward with prm"):
        dataclasses.replace(CONFIG, algo="expert-iteration", accept_min_prm=0.5)
    config = dataclasses.replace(CONFIG, algo="expert-iteration", reward="prm+outcome", accept_min_prm=0.5)
    run = RLRun(dataclasses.replace(CONFIG, algo="expert-iteration"), POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes = gold_and_wrong(run, POOL[0], 2, right=2) + gold_and_wrong(run, POOL[1], 2, right=2)
    run.config = config  # the episodes' PRM scores are set by hand below: no PRM needed to play them
    for episode, score in zip(episodes, (0.9, 0.9, 0.2, 0.2)):  # POOL[1]'s right answers: a doubted step
        episode.step_scores = [score] * len(episode.actions)
    before = [p.detach().clone() for p in run.model.parameters()]
    metrics = run.update(episodes, iteration=0)
    assert (metrics["accepted"], metrics["rejected_by_prm"]) == (1, 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


def test_dynamic_sampling_drops_groups_without_signal_and_draws_again(tmp_path):
    config = dataclasses.replace(CONFIG, dynamic_sampling=True)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    draws = []

    async def play(engine, problems, seed):
        draws.append(seed)
        run.state.samples += len(problems) * config.group_size
        right = 2 if len(draws) > 1 else 4  # the first draw: every sample right, no signal
        return [e for p in problems for e in await scripted(run, p, config.group_size, right)]

    run.play = play
    episodes = asyncio.run(run.rollout(None, iteration=0))
    assert len(draws) == 2 and len(set(draws)) == 2  # drew again, with a fresh seed
    assert len(episodes) == 2 * config.group_size and has_signal(episodes[:4]) and has_signal(episodes[4:])
    assert run.state.samples == 2 * 2 * config.group_size  # the dropped draw's samples count too


def test_the_edge_of_competence_skips_settled_questions(tmp_path):
    run = RLRun(CONFIG, POLICY, None, tmp_path, POOL, HELD_OUT)
    run.state.record_passes(gold_and_wrong(run, POOL[0], 4) + gold_and_wrong(run, POOL[1], 2)[:1] * 3)
    settled = run.state.settled_questions()
    assert settled == {POOL[1].id}  # POOL[0] half right: on the edge; POOL[1] always right: settled
    wide = dataclasses.replace(CONFIG, questions_per_iteration=len(POOL))
    assert POOL[1] not in draw_problems(POOL, wide, 0, skip=settled)
    assert draw_problems(POOL, CONFIG, 5) == draw_problems(POOL, CONFIG, 5, skip=frozenset())


@pytest.mark.parametrize(("name", "split"), [("arith-val", arith.validation_split), ("arith", arith.test_split)])
def test_runs_are_chosen_on_the_validation_split_by_name(name, split):
    from openr.rl.commands import build_parser, problem_sets

    args = build_parser().parse_args(["--policy", "p", "--out", "o", "--eval-dataset", name, "--eval-problems", "5"])
    config = RLConfig(eval_problems=args.eval_problems, train_problems=8)
    _, held_out = problem_sets(args, config)
    assert held_out == split()[:5]
    assert {p.id for p in arith.validation_split()}.isdisjoint(p.id for p in arith.test_split())


def test_the_entropy_probe_reads_fixed_gold_solutions(tmp_path):
    run = RLRun(CONFIG, POLICY, None, tmp_path, POOL, HELD_OUT)
    from openr.rl.diagnostics import probe_entropy, probe_episodes

    probe = probe_episodes(POOL, run.prompt_for, run.count_tokens)
    assert len(probe) == len(POOL) and all("\n\n".join(a.text for a in e.actions) == e.problem.solution
                                           for e in probe)
    sharp = probe_entropy(run.model, run.tokenizer, run.pad_id, probe, temperature=0.5)
    flat = probe_entropy(run.model, run.tokenizer, run.pad_id, probe, temperature=2.0)
    assert 0 < sharp < flat  # a hotter policy is less certain on the same tokens
    assert probe_entropy(run.model, run.tokenizer, run.pad_id, [], 1.0) is None


def test_rl_never_trains_on_the_problems_its_runs_are_chosen_or_reported_on():
    from openr.rl.commands import rl_train_problems

    problems = rl_train_problems(5000)
    pool = {p.solution for p in problems}
    assert len(problems) == 5000
    assert not pool & {p.solution for p in arith.validation_split()}
    assert not pool & {p.solution for p in arith.test_split()}


def test_the_rft_control_sets_expert_iterations_data_beside_gold_of_the_same_questions(tmp_path):
    from bench.rl_rft_control import data_sets

    run = RLRun(dataclasses.replace(CONFIG, algo="expert-iteration"), POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes = gold_and_wrong(run, POOL[0], 4) + gold_and_wrong(run, POOL[1], 4, right=0)
    sets, counts = data_sets(episodes)
    assert [p.id for p in sets["own"]] == [POOL[0].id]  # one distinct right solution; none for POOL[1]
    assert sets["own"][0].solution == POOL[0].solution  # the sample as played, steps joined back
    assert [p.id for p in sets["gold_same"]] == [POOL[0].id]
    assert [p.id for p in sets["gold_all"]] == [POOL[0].id, POOL[1].id]
    assert counts == {"samples": 8, "correct": 2, "accepted": 1, "questions": 2, "questions_solved": 1}


def test_a_cosine_round_is_a_fine_tune_of_its_own(tmp_path):
    """--round-schedule cosine: every round starts from fresh optimizer state, warms
    up over its first steps and decays by SFT's cosine toward a tenth of the peak."""
    seen = []

    def recording_adam(model, config):
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        real_step = optimizer.step
        optimizer.step = lambda *a, **k: (seen.append((optimizer.param_groups[0]["lr"], len(optimizer.state))),
                                          real_step(*a, **k))[1]
        return optimizer

    config = dataclasses.replace(CONFIG, algo="expert-iteration", round_schedule="cosine", round_warmup_steps=3,
                                 minibatch_size=1, update_epochs=3, learning_rate=1e-4, gradient_signal=False)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT, make_optimizer=recording_adam)
    episodes = [e for p in POOL[:4] for e in gold_and_wrong(run, p, 2, right=1)]
    for iteration in range(2):
        run.update(episodes, iteration=iteration)
    assert len(seen) == 24  # 4 accepted samples, one a minibatch and a step, 3 epochs, 2 rounds
    rates = [rate / 1e-4 for rate, _ in seen]
    expected = [(k + 1) / 3 if k < 3 else 0.1 + 0.45 * (1 + math.cos(math.pi * k / 12)) for k in range(12)]
    assert rates == pytest.approx(expected * 2)
    assert rates[11] < 0.12 and max(rates) == pytest.approx(1.0, abs=0.02)
    assert [state for _, state in seen].count(0) == 2  # empty at each round's first step, and only then
    assert seen[0][1] == 0 and seen[12][1] == 0


def test_a_constant_round_keeps_the_optimizers_state_and_rate(tmp_path):
    config = dataclasses.replace(CONFIG, algo="expert-iteration", minibatch_size=1, gradient_signal=False)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    episodes = [e for p in POOL[:2] for e in gold_and_wrong(run, p, 2, right=1)]
    run.update(episodes, iteration=0)
    state = len(run.optimizer.state)
    run.update(episodes, iteration=1)
    assert state > 0 and len(run.optimizer.state) == state
    assert {group["lr"] for group in run.optimizer.param_groups} == {config.learning_rate}

"""RL building blocks against hand computations: GAE, group advantages, the
environment's rewards, termination and bad actions, the action-token mask
(an off-by-one fails here), and the clipped losses."""

from __future__ import annotations

import math

import pytest
import torch
from gymnasium.error import ResetNeeded
from transformers import LlamaConfig, LlamaForCausalLM

from openr.contracts import Step
from openr.rl.advantages import gae, group_outcome_advantages, group_process_advantages
from openr.rl.config import RLConfig
from openr.rl.env import INVALID_ACTION_REWARD, EnvConfig, Episode, ReasoningEnv, VectorReasoningEnv
from openr.rl.losses import clipped_policy_loss, clipped_value_loss, kl_to_reference, token_advantages, token_view
from openr.rl.rollout import (
    NOT_ACTION,
    encode_episodes,
    episode_ids,
    run_episodes,
    run_solutions,
    select_rows,
    split_solution,
)
from openr.tasks.problem import Problem
from openr.training.tokenizer import build_tokenizer

PROBLEM = Problem("p0", "Compute 12 + 7 - 3.", "16", "12 + 7 = 19\n\n19 - 3 = 16\n\nThe answer is \\boxed{16}",
                  "arith", 2)
OTHER = Problem("p1", "Compute 2 * 3.", "6", None, "arith", 1)


class FakeScorer:
    """Scores a step 0.9 when it contains '=' and 0.2 otherwise; counts calls."""

    def __init__(self):
        self.calls: list[int] = []

    def score_batch(self, pairs):
        self.calls.append(len(pairs))
        return [[0.9 if "=" in step else 0.2 for step in steps] for _, steps in pairs]


def env(reward="prm+outcome", **kwargs) -> ReasoningEnv:
    return ReasoningEnv([PROBLEM, OTHER], EnvConfig(reward=reward, **kwargs), FakeScorer())


# --- advantages --------------------------------------------------------------------------------------------------

def test_gae_matches_a_hand_computation():
    advantages, returns = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], next_value=0.0, gamma=0.9, lam=0.8)
    # delta2 = 1 - 0.7 = 0.3; delta1 = 0.9*0.7 - 0.6 = 0.03; delta0 = 0.9*0.6 - 0.5 = 0.04; gamma*lam = 0.72
    assert advantages == pytest.approx([0.04 + 0.72 * (0.03 + 0.72 * 0.3), 0.03 + 0.72 * 0.3, 0.3])
    assert returns == pytest.approx([a + v for a, v in zip(advantages, [0.5, 0.6, 0.7])])


def test_gae_bootstraps_a_truncated_episode_from_next_value():
    advantages, _ = gae([1.0], [0.7], next_value=0.5, gamma=0.9, lam=0.8)
    assert advantages == pytest.approx([1.0 + 0.9 * 0.5 - 0.7])


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    advantages, returns = gae([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], next_value=0.0, gamma=0.5, lam=1.0)
    assert returns == pytest.approx([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])
    assert advantages == pytest.approx([2.75 - 0.1, 3.5 - 0.2, 3.0 - 0.3])


def test_group_outcome_advantages_are_normalised_within_the_group():
    assert group_outcome_advantages([1.0, 0.0, 0.0, 1.0]) == pytest.approx([1, -1, -1, 1], abs=1e-5)
    assert group_outcome_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # nothing to learn from a tie


def test_group_process_advantages_are_normalised_rewards_to_go():
    std = math.sqrt(2 / 9)  # of the flat rewards [1, 0, 0], mean 1/3
    high, low = (1 - 1 / 3) / std, (0 - 1 / 3) / std
    first, second = group_process_advantages([[1.0, 0.0], [0.0]])
    assert first == pytest.approx([high + low, low], abs=1e-5)
    assert second == pytest.approx([low], abs=1e-5)


# --- environment -------------------------------------------------------------------------------------------------

def test_reset_draws_reproducibly_and_observes_the_prompt():
    first = [env().reset(seed=7)[0] for _ in range(2)]
    assert first[0] == first[1] and first[0] in (PROBLEM.question, OTHER.question)
    observation, info = env().reset(options={"problem": PROBLEM})
    assert observation == PROBLEM.question and info["problem_id"] == "p0"


def test_prm_outcome_rewards_and_termination_on_a_boxed_answer():
    e = env()
    e.reset(options={"problem": PROBLEM})
    observation, reward, terminated, truncated, info = e.step("12 + 7 = 19")
    assert observation == PROBLEM.question + "12 + 7 = 19\n\n"
    assert (reward, terminated, truncated, info["prm_score"]) == (0.9, False, False, 0.9)
    _, reward, terminated, truncated, info = e.step("The answer is \\boxed{16}")
    assert terminated and not truncated and info["correct"] and info["answer"] == "16"
    assert reward == pytest.approx(0.2 + 1.0)  # PRM score of the step plus the outcome


@pytest.mark.parametrize("reward, expected", [("outcome", [0.0, 0.0]), ("prm", [0.9, 0.2]),
                                              ("prm+outcome", [0.9, 0.2])])
def test_a_wrong_final_answer_earns_no_outcome(reward, expected):
    e = env(reward)
    e.reset(options={"problem": PROBLEM})
    rewards = [e.step("12 + 7 = 19")[1], e.step("The answer is \\boxed{17}")[1]]
    assert rewards == pytest.approx(expected) and e.episode.terminated and not e.episode.correct


def test_outcome_reward_needs_no_scorer_and_prm_reward_does():
    ReasoningEnv([PROBLEM], EnvConfig(reward="outcome"))
    with pytest.raises(ValueError, match="scorer"):
        ReasoningEnv([PROBLEM], EnvConfig(reward="prm"))
    with pytest.raises(ValueError, match="reward"):
        EnvConfig(reward="length")


@pytest.mark.parametrize("action, reason", [("", "empty"), ("  \n ", "empty"), ("9" * 65, "too_long"),
                                            (Step("12 + 7 = 1", 10, "length", -1.0), "too_long")])
def test_bad_actions_end_the_episode_with_the_lowest_reward(action, reason):
    e = env(max_step_tokens=64)
    e.reset(options={"problem": PROBLEM})
    _, reward, terminated, truncated, info = e.step(action)
    assert (reward, terminated, truncated, info["invalid"]) == (INVALID_ACTION_REWARD, False, True, reason)
    assert e.scorer.calls == []  # an invalid step is not scored
    with pytest.raises(ResetNeeded):
        e.step("12 + 7 = 19")


@pytest.mark.parametrize("action", [None, 5, ["12 + 7 = 19"], b"12 + 7 = 19"])
def test_an_action_that_is_not_text_is_refused(action):
    e = env()
    e.reset(options={"problem": PROBLEM})
    with pytest.raises(TypeError, match="as text"):
        e.step(action)
    assert e.step("12 + 7 = 19")[1] == 0.9  # the episode is untouched


def test_step_before_reset_or_after_the_end_raises():
    e = env()
    with pytest.raises(ResetNeeded):
        e.step("12 + 7 = 19")
    e.reset(options={"problem": PROBLEM})
    e.step("The answer is \\boxed{16}")
    with pytest.raises(ResetNeeded):
        e.step("more")


def test_step_and_token_caps_truncate():
    e = env(max_steps=2)
    e.reset(options={"problem": PROBLEM})
    assert e.step("12 + 7 = 19")[3] is False
    _, _, terminated, truncated, info = e.step("19 - 3 = 16")
    assert truncated and not terminated and info["invalid"] is None and not info["correct"]
    e = env(max_episode_tokens=20)
    e.reset(options={"problem": PROBLEM})
    assert e.step("12 + 7 = 19")[3] is False  # 11 tokens
    assert e.step("19 - 3 = 16")[3] is True  # 22 >= 20


def test_an_end_of_text_without_an_answer_terminates_unrewarded():
    e = env("outcome")
    e.reset(options={"problem": PROBLEM})
    _, reward, terminated, _, info = e.step(Step("12 + 7 = 19", 11, "eos", -1.0))
    assert terminated and reward == 0.0 and not info["correct"]


def test_vector_env_scores_every_new_step_in_one_prm_call():
    scorer = FakeScorer()
    envs = VectorReasoningEnv([ReasoningEnv([PROBLEM], EnvConfig(), scorer) for _ in range(3)])
    envs.reset([PROBLEM, PROBLEM, OTHER])
    results = envs.step({0: "12 + 7 = 19", 1: "", 2: "2 * 3 = 6"})
    assert scorer.calls == [2]  # both valid new steps in one call; the empty one is not scored
    assert results[0][1] == 0.9 and results[1][4]["invalid"] == "empty" and results[2][1] == 0.9
    assert envs.live == [0, 2]
    with pytest.raises(ValueError):
        envs.reset([PROBLEM])


class ScriptedPolicy:
    """Answers every prefix with the next step of PROBLEM's gold solution."""

    def __init__(self):
        self.calls = []

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        self.calls.append(len(prefixes))
        gold = PROBLEM.solution.split("\n\n")
        out = []
        for prefix in prefixes:
            if not stop:  # asked for the whole solution
                out.append([Step(PROBLEM.solution, len(PROBLEM.solution), "eos", -1.0)] * n)
                continue
            done = prefix.count("\n\n")
            text = gold[done]
            out.append([Step(text, len(text), "eos" if done == len(gold) - 1 else "step", -1.0)] * n)
        return out


@pytest.mark.anyio
async def test_run_episodes_advances_every_live_episode_per_engine_call():
    envs = VectorReasoningEnv([env("outcome") for _ in range(4)])
    envs.reset([PROBLEM] * 4)
    policy = ScriptedPolicy()
    episodes = await run_episodes(envs, policy, temperature=1.0, seed=0)
    assert policy.calls == [4, 4, 4]  # one call per step, every episode in it
    assert all(e.correct and e.terminated and e.rewards == [0.0, 0.0, 1.0] for e in episodes)


@pytest.mark.anyio
async def test_run_solutions_samples_once_and_plays_the_same_steps():
    stepwise, whole = VectorReasoningEnv([env() for _ in range(2)]), VectorReasoningEnv([env() for _ in range(2)])
    for envs in (stepwise, whole):
        envs.reset([PROBLEM] * 2)
    policy = ScriptedPolicy()
    by_step = await run_episodes(stepwise, policy, temperature=1.0)
    policy.calls = []
    by_solution = await run_solutions(whole, policy, temperature=1.0)
    assert policy.calls == [2]  # one engine call for the whole round
    for a, b in zip(by_step, by_solution):
        assert a.steps == b.steps and a.rewards == b.rewards and a.correct and b.correct
        assert [s.finish_reason for s in a.actions] == [s.finish_reason for s in b.actions] == ["step", "step", "eos"]


class SeedRecorder(ScriptedPolicy):
    """Records the engine seed of every sample (the engine seeds sample i with seed + i)."""

    def __init__(self):
        super().__init__()
        self.sample_seeds = []

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        self.sample_seeds += [seed + i for i in range(len(prefixes) * n)]
        return await super().generate_steps(prefixes, n, stop, max_tokens, temperature, top_p, seed)


@pytest.mark.anyio
@pytest.mark.parametrize("play", [run_episodes, run_solutions])
async def test_no_random_stream_is_shared_between_rounds(play):
    rounds = []
    for round_seed in (41, 42):  # consecutive rounds have consecutive seeds
        envs = VectorReasoningEnv([env() for _ in range(128)])
        envs.reset([PROBLEM] * 128)
        policy = SeedRecorder()
        await play(envs, policy, temperature=1.0, seed=round_seed)
        assert len(set(policy.sample_seeds)) == len(policy.sample_seeds) >= 128  # within a round too
        rounds.append(set(policy.sample_seeds))
    assert not rounds[0] & rounds[1]


def test_split_solution_ends_as_the_sample_did():
    steps = split_solution(Step("1 + 1 = 2\n\nThe answer is \\boxed{2}", 30, "eos", -2.0), len)
    assert [(s.text, s.num_tokens, s.finish_reason) for s in steps] == [
        ("1 + 1 = 2", 9, "step"), ("The answer is \\boxed{2}", 23, "eos")]
    cut = split_solution(Step("1 + 1 = 2\n\n", 11, "eos", 0.0), len)
    assert [(s.text, s.finish_reason) for s in cut] == [("1 + 1 = 2", "step"), ("", "eos")]  # then: invalid, empty
    assert split_solution(Step("9999", 4, "length", 0.0), len)[0].finish_reason == "length"  # too long


# --- the action-token mask ---------------------------------------------------------------------------------------

def _episode() -> Episode:
    episode = Episode(PROBLEM, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    episode.actions = [Step("12 + 7 = 19", 11, "step", 0.0), Step("The answer is \\boxed{16}", 24, "eos", 0.0)]
    episode.rewards = [0.0, 1.0]
    return episode


def test_action_mask_covers_exactly_the_policys_tokens():
    tokenizer = build_tokenizer()
    ids, steps, ends = episode_ids(_episode(), tokenizer)
    prompt_len = len(tokenizer.encode(_episode().prompt, add_special_tokens=False))
    assert steps[:prompt_len] == [NOT_ACTION] * prompt_len and steps[prompt_len] == 0
    first = [i for i, s in zip(ids, steps) if s == 0]
    second = [i for i, s in zip(ids, steps) if s == 1]
    assert tokenizer.decode(first) == "12 + 7 = 19\n\n"  # the separator it stopped at is its own choice
    assert second[-1] == tokenizer.eos_token_id and tokenizer.decode(second[:-1]) == "The answer is \\boxed{16}"
    # a value is read at the last token of each state: just before each action starts, and at the very end
    assert ends == [prompt_len - 1, prompt_len - 1 + len(first), len(ids) - 1]


def test_token_view_reads_each_action_token_from_the_previous_position():
    """An off-by-one in the causal shift gives other log-probabilities here."""
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                                         max_position_embeddings=512)).eval()
    short = _episode()
    short.actions = short.actions[:1]
    batch = encode_episodes([_episode(), short], tokenizer, tokenizer.pad_token_id)
    with torch.no_grad():
        view = token_view(model, batch)
        cooled = token_view(model, batch, temperature=0.5)
        logits = model(input_ids=batch.input_ids[:1]).logits[0]
    ids = batch.input_ids[0]
    positions = (batch.step_index[0] != NOT_ACTION).nonzero().squeeze(-1)
    expected = torch.log_softmax(logits, -1)[positions - 1, ids[positions]]
    assert torch.allclose(view.logprobs[0][view.mask[0]], expected, atol=1e-5)
    # rollouts sampled at T are scored under softmax(logits / T), the policy that chose them
    expected = torch.log_softmax(logits / 0.5, -1)[positions - 1, ids[positions]]
    assert torch.allclose(cooled.logprobs[0][cooled.mask[0]], expected, atol=1e-5)
    assert int(view.mask[1].sum()) == len("12 + 7 = 19\n\n")  # the padded row trains only its own action
    assert not view.mask[1][int(batch.attention_mask[1].sum()) - 1:].any()
    trimmed = select_rows(batch, torch.tensor([1]))
    assert trimmed.input_ids.shape[1] == int(batch.attention_mask[1].sum())


def test_token_advantages_follow_the_step_index():
    step_index = torch.tensor([[NOT_ACTION, 0, 0, 1, NOT_ACTION], [NOT_ACTION, NOT_ACTION, 0, 0, 0]])
    table = token_advantages([[0.5, -1.0], [2.0]], step_index)
    assert table.tolist() == [[0.0, 0.5, 0.5, -1.0, 0.0], [0.0, 0.0, 2.0, 2.0, 2.0]]


# --- losses ------------------------------------------------------------------------------------------------------

def test_clipped_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.0, 0.5]]))
    mask = torch.tensor([[True, True, True]])
    loss, stats = clipped_policy_loss(new, old, torch.tensor([[1.0, 1.0, -1.0]]), mask, clip=0.2)
    # min(1.5, 1.2) * 1 = 1.2; 1.0; min(0.5 * -1, 0.8 * -1) = -0.8  -> loss = -(1.2 + 1 - 0.8) / 3
    assert loss.item() == pytest.approx(-(1.2 + 1.0 - 0.8) / 3)
    assert stats["clipfrac"] == pytest.approx(2 / 3)


def test_kl_to_reference_is_zero_only_at_the_reference():
    logprobs, mask = torch.log(torch.tensor([[0.5, 0.25]])), torch.tensor([[True, True]])
    assert kl_to_reference(logprobs, logprobs, mask).item() == 0.0
    assert kl_to_reference(logprobs, torch.log(torch.tensor([[0.25, 0.5]])), mask).item() > 0


def test_clipped_value_loss_takes_the_pessimistic_error():
    loss = clipped_value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.8 ** 2)  # the clipped value 0.2 is 0.8 from the return


def test_rl_config_refuses_nonsense():
    for bad in (dict(algo="dpo"), dict(reward="vibes"), dict(group_size=1), dict(clip=1.5), dict(iterations=0),
                dict(kl_coef=-1), dict(gamma=2), dict(seed=-1)):
        with pytest.raises(ValueError):
            RLConfig(**bad)

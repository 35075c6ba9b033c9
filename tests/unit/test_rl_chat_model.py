"""RL on a chat model's own habits: a step a line (`--step-separator '\\n'`) with
blank lines between paragraphs, GSM8K answers stated as "#### N" or "The answer
is N" and graded by math-verify, a `--policy` given by the name `openr serve`
takes, held-out replies of the length asked for, and runs saved before a config
field existed still resuming."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from openr.contracts import Step
from openr.engine.checkpoints import split_bundle
from openr.rl import commands
from openr.rl.checkpoint import CONFIG_FILE, LATEST, STATE_DIR, save_state
from openr.rl.config import RLConfig
from openr.rl.env import EnvConfig, ReasoningEnv, VectorReasoningEnv
from openr.rl.rollout import episode_ids, run_episodes, run_solutions, split_solution
from openr.rl.trainer import RLRun
from openr.tasks import arith
from openr.tasks.datasets import gsm8k_problem
from openr.training.policy_accuracy import MAX_NEW_TOKENS, engine_grades
from openr.training.tokenizer import build_tokenizer
from tests.support.fake_engine import FakeEngine

LINE = "\n"
GSM8K = gsm8k_problem({"question": "Weng earns $12 an hour. How much for 50 minutes?",
                       "answer": "12/60 = <<12/60=0.2>>0.2 per minute.\n0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"}, 0)
# How a small chat model writes: one step a line, a blank line between paragraphs, a GSM8K-style answer.
WRITTEN = "She earns 12/60 = 0.2 a minute.\n\nIn 50 minutes: 0.2 x 50 = 10.\n#### 10"


class Writer:
    """A policy that always writes WRITTEN after the question, honouring the stop
    string and continuing any prefix of it, as an engine continues a prompt."""

    def __init__(self):
        self.prefixes: list[str] = []

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        out = []
        for prefix in prefixes:
            self.prefixes.append(prefix)
            written = prefix[len(GSM8K.question):]
            assert WRITTEN.startswith(written)
            rest = WRITTEN[len(written):]
            cut = rest.find(stop[0]) if stop else -1
            piece, finish = (rest[:cut], "step") if cut >= 0 else (rest, "eos")
            out.append([Step(piece, len(piece), finish, -1.0)] * n)
        return out


def line_envs(count: int) -> VectorReasoningEnv:
    config = EnvConfig(reward="outcome", step_separator=LINE)
    envs = VectorReasoningEnv([ReasoningEnv([GSM8K], config) for _ in range(count)])
    envs.reset([GSM8K] * count)
    return envs


def test_a_blank_line_between_one_line_steps_starts_the_next_step():
    steps = split_solution(Step(WRITTEN, 0, "eos", 0.0), len, LINE)
    assert [s.text for s in steps] == ["She earns 12/60 = 0.2 a minute.", "\nIn 50 minutes: 0.2 x 50 = 10.", "#### 10"]
    assert [s.finish_reason for s in steps] == ["step", "step", "eos"]
    assert "".join(s.text + LINE for s in steps[:-1]) + steps[-1].text == WRITTEN  # nothing lost or added


@pytest.mark.anyio
@pytest.mark.parametrize("play", [run_episodes, run_solutions])
async def test_one_line_steps_play_to_a_graded_gsm8k_answer(play):
    [episode] = await play(line_envs(1), Writer(), temperature=1.0)
    assert episode.invalid is None and episode.terminated and episode.correct and episode.rewards == [0, 0, 1.0]
    assert episode.steps == ["She earns 12/60 = 0.2 a minute.", "\nIn 50 minutes: 0.2 x 50 = 10.", "#### 10"]
    assert episode.observation == GSM8K.question + WRITTEN + LINE


@pytest.mark.anyio
async def test_stepwise_rollouts_carry_a_blank_step_into_the_next_prompt():
    writer = Writer()
    await run_episodes(line_envs(1), writer, temperature=1.0)
    after_first = GSM8K.question + "She earns 12/60 = 0.2 a minute.\n"
    assert writer.prefixes == [GSM8K.question, after_first, after_first + "\n", after_first + "\nIn 50 minutes: "
                               "0.2 x 50 = 10.\n"]


@pytest.mark.parametrize("answer, correct", [("#### 10", True), ("The answer is 10.0", True),
                                             ("The answer is $\\frac{20}{2}$.", True), ("#### 12", False)])
def test_a_stated_final_answer_ends_the_episode_graded_by_math_verify(answer, correct):
    env = ReasoningEnv([GSM8K], EnvConfig(reward="outcome", step_separator=LINE))
    env.reset(options={"problem": GSM8K})
    _, reward, terminated, _, info = env.step(answer)
    assert terminated and info["correct"] is correct and reward == float(correct)


def test_a_line_steps_tokens_end_with_the_newline_it_stopped_at():
    [episode] = asyncio.run(run_solutions(line_envs(1), Writer(), temperature=1.0))
    tokenizer = build_tokenizer()
    ids, steps, _ = episode_ids(episode, tokenizer)
    first = [i for i, s in zip(ids, steps) if s == 0]
    assert tokenizer.decode(first) == "She earns 12/60 = 0.2 a minute." + LINE


def test_the_step_separator_flag_reads_escapes_and_refuses_empty():
    parser = commands.build_parser()
    args = parser.parse_args(["--policy", "p", "--out", "o", "--step-separator", "\\n"])
    assert args.step_separator == LINE
    assert parser.parse_args(["--policy", "p", "--out", "o"]).step_separator == "\n\n"
    with pytest.raises(SystemExit):
        parser.parse_args(["--policy", "p", "--out", "o", "--step-separator", ""])
    with pytest.raises(ValueError):
        RLConfig(step_separator="")


def problems_file(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": GSM8K.question, "answer": "#### 10"}) + "\n")
    return str(data)


def test_policy_takes_the_names_openr_serve_takes(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("openr.rl.trainer.train_rl", lambda config, policy, *args, **kwargs: started.append(policy)
                        or {})
    data = problems_file(tmp_path)
    commands.main(["--policy", "openr-arith", "--out", str(tmp_path / "out"), "--dataset", data,
                   "--eval-dataset", data])
    assert started == [Path(split_bundle("openr-arith")[0])] and (started[0] / "config.json").exists()


def test_a_policy_directory_that_is_missing_fails_before_anything_loads(tmp_path, capsys):
    data = problems_file(tmp_path)
    with pytest.raises(SystemExit):
        commands.main(["--policy", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--dataset", data,
                       "--eval-dataset", data])
    assert "no such checkpoint directory" in capsys.readouterr().err


def test_held_out_replies_get_the_tokens_asked_for():
    assert RLConfig().eval_max_tokens == MAX_NEW_TOKENS  # the default held arith's numbers where they were
    engine = FakeEngine()
    asyncio.run(engine_grades(engine, [GSM8K], progress=False, max_tokens=7))
    assert [p.max_tokens for p in engine.params] == [7]


def test_a_run_saved_before_a_config_field_existed_resumes_and_a_changed_one_is_refused(tmp_path):
    policy, _ = split_bundle("openr-arith")
    pool, held_out = arith.train_problems(4, seed=5), arith.test_split()[:1]
    config = RLConfig(questions_per_iteration=1, group_size=2, kl_coef=0.0)
    run = RLRun(config, policy, None, tmp_path, pool, held_out)
    run.state.iteration = 3
    save_state(tmp_path, run)
    saved = tmp_path / STATE_DIR / (tmp_path / STATE_DIR / LATEST).read_text() / CONFIG_FILE
    older = json.loads(saved.read_text())
    del older["step_separator"], older["eval_max_tokens"]  # fields added after such a run was saved
    saved.write_text(json.dumps(older))
    assert RLRun(config, policy, None, tmp_path, pool, held_out).state.iteration == 3
    with pytest.raises(ValueError, match="step_separator"):
        RLRun(RLConfig(questions_per_iteration=1, group_size=2, kl_coef=0.0, step_separator=LINE), policy, None,
              tmp_path, pool, held_out)

"""`openr train rl` end to end on the shipped openr-arith policy (0.8M
parameters): a seeded GRPO run whose reward rises, PPO with PRM rewards, resume
after a kill with nothing lost or repeated, and the result served by `openr serve`."""

from __future__ import annotations

import json

import openai
import pytest
import torch
from safetensors.torch import load_file

from openr.engine.checkpoints import split_bundle
from openr.rl import trainer
from openr.rl.commands import main as rl_main
from openr.rl.config import RLConfig
from openr.rl.trainer import train_rl
from openr.tasks import arith
from tests.support.servers import API_KEY, ServerProcess

POLICY, PRM = split_bundle("openr-arith")
POOL = arith.train_problems(64, seed=5, min_ops=2, max_ops=3)
HELD_OUT = arith.test_split()[:16]
SMALL = RLConfig(iterations=3, questions_per_iteration=2, group_size=4, minibatch_size=8, eval_every=3,
                 save_every=1, eval_problems=16, max_steps=6, warmup_iterations=1, seed=11)


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl-straight")
    return out, train_rl(SMALL, POLICY, None, out, POOL, HELD_OUT, progress=False)


def test_resume_after_a_kill_loses_and_repeats_nothing(uninterrupted, tmp_path, monkeypatch):
    straight, _ = uninterrupted
    real_rollout = trainer.RLRun.rollout

    async def killed_in_round_three(self, engine, iteration):
        if iteration == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside
        return await real_rollout(self, engine, iteration)

    monkeypatch.setattr(trainer.RLRun, "rollout", killed_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        train_rl(SMALL, POLICY, None, tmp_path, POOL, HELD_OUT, progress=False)
    monkeypatch.setattr(trainer.RLRun, "rollout", real_rollout)
    resumed = train_rl(SMALL, POLICY, None, tmp_path, POOL, HELD_OUT, progress=False)
    assert resumed["steps"] == 3 and resumed["samples"] == 3 * 2 * 4
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in history] == [1, 2, 3]
    expected = [json.loads(line) for line in (straight / "history.jsonl").read_text().splitlines()]
    assert [m["reward"] for m in history] == [m["reward"] for m in expected]
    a, b = _weights(straight), _weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_another_config_in_the_same_directory_is_refused(uninterrupted):
    straight, _ = uninterrupted
    with pytest.raises(ValueError, match="another config"):
        train_rl(RLConfig(**{**SMALL.__dict__, "learning_rate": 1e-3}), POLICY, None, straight, POOL, HELD_OUT,
                 progress=False)


def test_summary_reports_accuracy_by_exact_grading_and_the_machine(uninterrupted):
    out, summary = uninterrupted
    assert [e["iteration"] for e in summary["evals"]] == [0, 3]
    assert all(0 <= e["accuracy"] <= 1 for e in summary["evals"])
    assert summary["dtype"] == "float32" and "cpu" in summary["machine"]
    for e in summary["evals"]:  # and by level: the levels' shares weigh up to the whole
        counts = {str(level): sum(p.level == level for p in HELD_OUT) for level in {p.level for p in HELD_OUT}}
        assert set(e["by_level"]) == set(counts)
        assert sum(e["by_level"][lv] * n for lv, n in counts.items()) / len(HELD_OUT) == pytest.approx(e["accuracy"])
    assert json.loads((out / "summary.json").read_text())["samples"] == summary["samples"]


def test_the_best_held_out_round_is_kept_for_choosing_the_run(uninterrupted):
    out, summary = uninterrupted
    chosen = json.loads((out / "best" / "held_out.json").read_text())
    best = max(e["accuracy"] for e in summary["evals"])
    first_best = next(e for e in summary["evals"] if e["accuracy"] == best)
    assert (chosen["iteration"], chosen["accuracy"]) == (first_best["iteration"], best)
    kept = _weights(out / "best")
    if chosen["iteration"] == SMALL.iterations:
        assert all(torch.equal(kept[k], w) for k, w in _weights(out).items())
    else:  # the starting policy was the best
        start = load_file(f"{POLICY}/model.safetensors")
        assert all(torch.equal(kept[k], w) for k, w in start.items())


def test_grpo_raises_the_reward_on_a_seeded_run(tmp_path):
    """Eight easy problems, the same ones every round: the policy's sampled
    solutions get right more often, the mean reward of the last three rounds
    more than 0.1 above that of the first three (what is asserted; no range of
    rewards is claimed, as none was recorded in a result file)."""
    pool = POOL[:8]
    config = RLConfig(iterations=10, questions_per_iteration=8, group_size=8, minibatch_size=32, eval_every=10,
                      save_every=10, eval_problems=8, learning_rate=5e-5, kl_coef=0.0, warmup_iterations=1,
                      max_steps=6, seed=3, gradient_signal=False)
    summary = train_rl(config, POLICY, None, tmp_path, pool, pool, progress=False)
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(rewards) == 10 and summary["samples"] == 10 * 64
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1


def test_ppo_with_prm_rewards_runs_and_fits_its_value_head(tmp_path):
    config = RLConfig(algo="ppo", reward="prm+outcome", iterations=2, questions_per_iteration=2, group_size=4,
                      minibatch_size=8, eval_every=2, save_every=2, eval_problems=4, max_steps=6, seed=1)
    summary = train_rl(config, POLICY, PRM, tmp_path, POOL, HELD_OUT[:4], progress=False)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert summary["reward"] == "prm+outcome" and len(history) == 2
    assert all({"value_loss", "explained_variance", "prm_reward", "kl", "entropy", "clipfrac"} <= set(m)
               for m in history)
    assert 0 < history[0]["prm_reward"] <= 6  # one PRM score in [0, 1] per step
    assert (tmp_path / "rl_state" / "round-000002" / "value_head.pt").exists()


def test_command_line_explains_and_validates(capsys):
    with pytest.raises(SystemExit) as exit_info:
        rl_main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert all(flag in text for flag in ("--algo", "--reward", "--kl-coef", "--group-size", "--lam", "--prm"))
    with pytest.raises(SystemExit) as exit_info:
        rl_main(["--policy", str(POLICY), "--out", "x", "--algo", "grpo", "--group-size", "1"])
    assert exit_info.value.code == 2 and "group_size" in capsys.readouterr().err


def test_a_huge_seed_trains(tmp_path):
    """Round seeds are folded into range: --seed 10**12 once overflowed torch's generator."""
    config = RLConfig(**{**SMALL.__dict__, "iterations": 1, "seed": 10**12, "rollout": "step"})
    summary = train_rl(config, POLICY, None, tmp_path, POOL, HELD_OUT[:2], progress=False)
    assert summary["steps"] == 1 and summary["samples"] == 8


@pytest.mark.parametrize("content", ["", "not json\n"])
def test_an_unusable_dataset_is_a_usage_error(tmp_path, capsys, content):
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        rl_main(["--policy", str(POLICY), "--out", str(tmp_path / "out"), "--dataset", str(dataset)])
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        rl_main(["--policy", str(POLICY), "--out", str(tmp_path / "out"), "--dataset", str(tmp_path / "missing")])
    assert exit_info.value.code == 2


@pytest.mark.e2e
def test_the_rl_policy_is_served(uninterrupted):
    out, _ = uninterrupted
    with ServerProcess(["--engine", "hf", "--model", str(out)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        reply = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=64, temperature=0,
                                               messages=[{"role": "user", "content": "Compute 12 + 7 - 3."}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


def test_the_runs_report_reads_what_the_run_wrote(uninterrupted, tmp_path):
    from bench import rl_runs

    out, summary = uninterrupted
    rl_runs.main([str(out), "--out", str(tmp_path / "report")])
    [record] = json.loads((tmp_path / "report" / "results.json").read_text())["runs"]
    assert [(e["iteration"], e["accuracy"]) for e in record["evals"]] == \
        [(e["iteration"], e["accuracy"]) for e in summary["evals"]]
    assert record["samples"] == summary["samples"] and record["finished"]
    assert record["chosen"]["accuracy"] == max(e["accuracy"] for e in summary["evals"])
    assert "--iterations 3" in record["flags"] and "--no-gradient-signal" not in record["flags"]
    copied = tmp_path / "report" / "runs" / out.name
    assert (copied / "history.jsonl").read_text() == (out / "history.jsonl").read_text()
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0
    assert out.name in (tmp_path / "report" / "table.md").read_text()
    assert "Validation accuracy by level" in (tmp_path / "report" / "table.md").read_text()


def test_the_paired_comparison_counts_problems_only_one_side_gets_right():
    from bench import rl_runs

    start = [True, True, False, False, False, True]
    chosen = [True, False, True, True, False, True]
    result = rl_runs.paired(start, chosen)
    assert (result["right_only_chosen"], result["right_only_start"]) == (2, 1)
    assert 0.99 < result["sign_test_p"] <= 1.0
    assert rl_runs.paired([False] * 20, [True] * 20)["sign_test_p"] < 1e-5


def test_the_command_that_wrote_a_run_is_kept_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "train_rl", lambda *args, **kwargs: {"algo": "grpo"})
    rl_main(["--policy", str(POLICY), "--out", str(tmp_path), "--iterations", "2", "--eval-problems", "4",
             "--eval-dataset", "arith-val"])
    assert (tmp_path / "command.txt").read_text().split() == \
        ["openr", "train", "rl", "--policy", str(POLICY), "--out", str(tmp_path), "--iterations", "2",
         "--eval-problems", "4", "--eval-dataset", "arith-val"]


def test_the_runs_report_refuses_a_directory_that_holds_no_run(tmp_path, capsys):
    from bench import rl_runs

    with pytest.raises(SystemExit) as exit_info:
        rl_runs.main([str(tmp_path), "--out", str(tmp_path / "report")])
    assert exit_info.value.code == 2 and "holds no RL run" in capsys.readouterr().err

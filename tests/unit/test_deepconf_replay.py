"""bench/deepconf_replay serves collected samples to the strategies as the engine
would have: sample j by seed, a monitored sample halted at the very token its
monitor names (counted up to there), an end-of-text token counted but unseen."""

from __future__ import annotations

from bench.deepconf_replay import SAMPLES, replay


def sample(answer: str, logprobs: list[float]) -> dict:
    return {"text": f"so \\boxed{{{answer}}}", "finish": "eos", "logprobs": logprobs,
            "top": [[lp, lp - 1.0] for lp in logprobs]}


def rows(samples: list[dict]) -> dict:
    return {"p1": {"question": "Q?", "gold": "7", "samples": samples}}


def test_majority_vote_replays_all_sixteen_samples_with_their_end_of_text_tokens():
    accuracy, tokens, calls = replay(rows([sample("7", [-0.1] * 4)] * 9 + [sample("8", [-0.1] * 4)] * 7),
                                     "majority_vote", {}, seed=0)
    assert (accuracy, tokens, calls) == (1.0, SAMPLES * 5, 1)


def test_online_deepconf_halts_a_replayed_sample_at_its_monitors_token():
    sure, unsure = [-0.1] * 4, [-0.1, -3.0, -0.1, -0.1]  # min_logprob -0.1 against -3.0
    # the warm-up (7 and 8, least likely tokens -0.1: the threshold) splits the vote; the next wave's two 8s
    # halt at their 2nd token (-3.0) and never vote; the wave after adds two 7s: 3 of 4 votes, consensus 0.75
    samples = [sample("7", sure), sample("8", sure)] + [sample("8", unsure)] * 2 + [sample("7", sure)] * 12
    accuracy, tokens, calls = replay(rows(samples), "deepconf",
                                     {"measure": "min_logprob", "warmup": 2, "wave": 2, "consensus": 0.75}, seed=0)
    assert tokens == 2 * 5 + 2 * 2 + 2 * 5 and calls == 3 and accuracy == 1.0


def test_a_rule_is_chosen_by_fewest_tokens_at_no_loss_or_by_accuracy_within_a_token_budget():
    from bench.deepconf_replay import choose

    def rule(accuracy, ratio):
        return {"accuracy": accuracy, "mean_tokens": 1000 * ratio, "tokens_against_majority_16": ratio}

    results = {"majority_vote n=16": rule(0.40, 1.0), "deepconf online a": rule(0.41, 0.35),
               "deepconf online b": rule(0.44, 0.55), "deepconf online c": rule(0.44, 0.50),
               "deepconf online d": rule(0.46, 0.70), "deepconf offline e": rule(0.50, 0.30)}
    assert choose(results, max_drop=0.0, token_budget=None) == "deepconf online a"
    assert choose(results, max_drop=0.0, token_budget=0.6) == "deepconf online c"  # d is over budget
    assert choose(results, max_drop=0.0, token_budget=0.2) is None

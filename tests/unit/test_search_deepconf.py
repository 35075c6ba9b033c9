"""strategy deepconf (and the confidence aggregations) on a scripted policy whose
every token's confidence is known, so each filter, threshold, halt and vote can
be worked out by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from openr.contracts import Step
from openr.search import Budget, SearchConfigError, build_config
from tests.support.search_fakes import run

pytestmark = pytest.mark.anyio


@dataclass
class ScriptedSample:
    answer: str
    confidences: list[float]  # each token's: its top-k is [-c], so its confidence is c


@dataclass
class ConfidencePolicy:
    """Sample i of the search is `script[i]`; each token is shown to the sample's
    monitor as it is "generated", and a monitor that says halt ends it there."""

    script: list[ScriptedSample]
    calls: list[dict] = field(default_factory=list)
    drawn: int = 0

    async def generate_steps(self, prefixes: Sequence[str], n: int, stop: Sequence[str], max_tokens: int,
                             temperature: float, top_p: float = 1.0, seed: int | None = None,
                             top_logprobs: int = 0, monitor=None) -> list[list[Step]]:
        self.calls.append({"n": n, "seed": seed, "top_logprobs": top_logprobs, "monitored": monitor is not None})
        row = []
        for _ in range(n):
            sample = self.script[self.drawn]
            self.drawn += 1
            watch = monitor() if monitor else None
            tokens, finish = [], "eos"
            for c in sample.confidences:
                tokens.append(c)
                if len(tokens) == max_tokens:
                    finish = "length"
                if watch is not None and watch(-c, [-c]):
                    finish = "halted"
                if finish != "eos":
                    break
            text = f"so \\boxed{{{sample.answer}}}" if finish == "eos" else "so"
            row.append(Step(text, len(tokens), finish, -sum(tokens), tuple(-c for c in tokens),
                            tuple((-c,) for c in tokens)))
        return [row for _ in prefixes]


def flat(answer: str, confidence: float, tokens: int = 10) -> ScriptedSample:
    return ScriptedSample(answer, [confidence] * tokens)


def deepconf(**options):
    return build_config("deepconf", {"window": 2, **options})


async def test_offline_keeps_the_most_confident_share_and_weights_their_votes():
    policy = ConfidencePolicy([flat("A", 1.0), flat("A", 1.0), flat("B", 5.0), flat("C", 0.5)])
    result = await run("deepconf", deepconf(mode="offline", n=4, keep_percent=50), policy, None)
    report = result.decisions["deepconf"]
    assert [s["ended"] for s in report["per_sample"]] == ["eos", "filtered", "eos", "filtered"]
    assert result.candidates[0].answer == "B"  # B's 5.0 outweighs A's 1.0; majority would say A
    assert policy.calls == [{"n": 4, "seed": None, "top_logprobs": 5, "monitored": False}]


async def test_offline_with_everything_kept_is_a_confidence_weighted_vote():
    policy = ConfidencePolicy([flat("A", 1.0), flat("A", 1.0), flat("B", 2.5)])
    result = await run("deepconf", deepconf(mode="offline", n=3, keep_percent=100), policy, None)
    assert result.candidates[0].answer == "B"  # 2.5 against 1.0 + 1.0
    assert result.tokens_generated == 30


async def test_online_warmup_sets_the_threshold_and_a_later_sample_halts_below_it():
    # warm-up values 3, 3, 3, 1 -> the 25th percentile (keep 75%) is 1 + 0.75 * 2 = 2.5
    warmup = [flat("A", 3.0), flat("B", 3.0), flat("A", 3.0), flat("C", 1.0)]
    falling = ScriptedSample("B", [3.0, 3.0, 1.0, 1.0, 1.0, 1.0])  # windows of 2: 3.0, 2.0 < 2.5 at token 3
    policy = ConfidencePolicy(warmup + [falling, flat("A", 3.0)])
    config = deepconf(n=6, keep_percent=75, warmup=4, wave=2, consensus=0.95, seed=10)
    result = await run("deepconf", config, policy, None)
    report = result.decisions["deepconf"]
    assert report["threshold"] == pytest.approx(2.5)
    assert [s["ended"] for s in report["per_sample"]] == ["eos", "eos", "eos", "eos", "halted", "eos"]
    assert [s["tokens"] for s in report["per_sample"]] == [10, 10, 10, 10, 3, 10]
    assert report["halted"] == 1 and report["voting"] == 5  # every warm-up sample votes, C's 1.0 too
    assert result.tokens_generated == 53  # the halted sample's 3 tokens are charged
    assert result.candidates[0].answer == "A"
    assert [(c["n"], c["seed"], c["monitored"]) for c in policy.calls] == [(4, 10, False), (2, 14, True)]


async def test_online_draws_no_more_once_the_weighted_vote_reaches_consensus():
    policy = ConfidencePolicy([flat("A", 3.0)] * 3 + [flat("B", 0.1)] + [flat("B", 9.0)] * 12)
    result = await run("deepconf", deepconf(n=16, keep_percent=90, consensus=0.9), policy, None)
    assert result.stop_reason == "confident" and policy.drawn == 4
    assert result.decisions["deepconf"]["consensus"] == pytest.approx(9.0 / 9.1, abs=1e-4)  # B's 0.1 votes
    assert result.candidates[0].answer == "A"


async def test_online_with_the_min_logprob_measure_halts_at_an_unlikely_token():
    policy = ConfidencePolicy([flat("A", 0.5), flat("B", 0.5)] * 2 + [ScriptedSample("B", [0.5, 0.5, 4.0, 0.5])] * 2)
    result = await run("deepconf", deepconf(n=6, measure="min_logprob", consensus=1.0), policy, None)
    report = result.decisions["deepconf"]
    assert [s["ended"] for s in report["per_sample"]][4:] == ["halted", "halted"]
    assert [s["tokens"] for s in report["per_sample"]][4:] == [3, 3]
    assert result.tokens_generated == 4 * 10 + 2 * 3


async def test_a_token_budget_stops_deepconf_and_counts_halted_tokens():
    policy = ConfidencePolicy([flat("A", 3.0), flat("B", 3.0)] * 2 + [ScriptedSample("C", [3.0, 0.1, 0.1])] * 12)
    budget = Budget(max_tokens_total=49)
    result = await run("deepconf", deepconf(n=16, consensus=1.0, wave=2), policy, None, budget)
    assert result.stop_reason == "tokens"
    # warm-up 40; then waves of 2 capped at (49 - spent) // 2 tokens each: 2 halted at 2, 2 at 2, 2 cut at 1
    assert result.tokens_generated == 40 + 4 + 4 + 2
    assert budget.tokens_generated == result.tokens_generated


@pytest.mark.parametrize("options, field_name", [
    ({"mode": "fast"}, "mode"),
    ({"measure": "tail"}, "measure"),  # tail can rise again: no online halting by it
    ({"measure": "median"}, "measure"),
    ({"keep_percent": 0}, "keep_percent"),
    ({"keep_percent": 101}, "keep_percent"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"window": 0}, "window"),
    ({"warmup": 0}, "warmup"),
    ({"consensus": 0}, "consensus"),
    ({"wave": True}, "wave"),
])
def test_bad_options_are_refused_naming_the_option(options, field_name):
    with pytest.raises(SearchConfigError) as error:
        build_config("deepconf", options)
    assert error.value.field == field_name


def test_offline_takes_any_measure():
    assert build_config("deepconf", {"mode": "offline", "measure": "tail"}).measure == "tail"


async def test_best_of_n_can_vote_by_confidence_without_a_prm():
    policy = ConfidencePolicy([flat("A", 1.0), flat("A", 1.0), flat("B", 2.5)])
    config = build_config("best_of_n", {"n": 3, "aggregation": "confidence_vote"})
    assert not config.needs_prm
    result = await run("best_of_n", config, policy, None)
    assert result.candidates[0].answer == "B"
    assert [c.aggregate_score for c in result.candidates] == pytest.approx([2.5, 1.0, 1.0])
    assert policy.calls[0]["top_logprobs"] == 5


def test_prm_guided_searches_refuse_a_confidence_aggregation():
    with pytest.raises(SearchConfigError) as error:
        build_config("beam_search", {"aggregation": "confidence_vote"})
    assert error.value.field == "aggregation"


async def test_auto_without_a_prm_hands_its_probe_to_deepconf_as_the_warm_up():
    # the probe's votes, 3 to 1, leave it unsettled, so the high tier (16 samples) runs as deepconf, the
    # probe its warm-up: A's 7 against B's 3 need six sure A's more (7 + 54 >= 0.95 * 64)
    policy = ConfidencePolicy([flat("A", 3.0), flat("B", 3.0), flat("A", 3.0), flat("A", 1.0)]
                              + [flat("A", 9.0)] * 12)
    result = await run("auto", build_config("auto", {"effort": "high", "seed": 0}), policy, None)
    auto, report = result.decisions["auto"], result.decisions["deepconf"]
    assert auto["strategy"] == "deepconf" and "warm-up" in auto["probe_reused"]
    assert policy.calls[0] == {"n": 4, "seed": 0, "top_logprobs": 5, "monitored": False}  # the probe
    assert policy.calls[1] == {"n": 2, "seed": 4, "top_logprobs": 5, "monitored": True}  # deepconf's first wave
    assert report["samples"] == policy.drawn == 10 and result.stop_reason == "confident"
    assert result.candidates[0].answer == "A"

"""strategy "auto": the strategy and its size chosen per question, from the
request's budget and a cheap, online estimate of how hard the question is.

1. The budget, in tokens: `effort` (low/medium/high) through the table's
   `effort_tokens`, else the request's `max_tokens_total`.
2. The probe: a first wave of FIRST_WAVE_SAMPLES whole solutions, scored by the
   PRM when there is one (without one, they carry their token log-probabilities
   and are weighted by confidence). How settled its answer is (adaptive
   stopping's posterior, PRM-weighted) is the difficulty estimate.
3. The decision (`decide`): a probe that is already settled answers at once
   (stop_reason "confident"); otherwise the table's tier for the budget names a
   strategy and its options.
4. The hand-over, where the probe counts toward the tier's size, so a tier of n
   solutions costs about n solutions in all, not n plus the probe (the table's
   tiers were fitted on strategies run alone, at those costs):
   - a voting strategy continues the probe's waves up to its `n`;
   - deepconf (a tier's stand-in without a PRM) takes the probe as its warm-up;
   - particle_filtering starts with the probe's solutions among its `n`
     particles (finished ones, resampled like its own) and grows the rest;
   - best_of_n with another aggregation, beam_search and dvts run after the
     probe with `n` less the probe's samples (never below their minimum: 1, or
     one `beam_width`), and the probe's solutions stay final candidates;
   - mcts and cot count no whole solutions, so they run in full after it.
   A tier no larger than the probe (beam_search n=4 after a probe of 4, say)
   would be replaced by the probe, or added to it at twice its cost: such a
   tier runs alone, with no probe (`probe_samples` 0), unless its waves would
   continue the probe's anyway.
   The trace's `auto` entry says how the probe was reused (`probe_reused`) and
   the options the strategy ran with (`ran_options`).

The table is fitted offline by `openr eval --fit-auto` on a validation split
(never the test split) and ships with the model bundle as `auto.json`; without
one, `DEFAULT_TABLE` (the reasoning_effort presets) applies. The trace's `auto`
entry says what was chosen and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import SearchProblem, SearchResult
from openr.search.config import DEFAULT_AGGREGATION, GroupedSamplesConfig, SearchConfig, SearchConfigError
from openr.search.metered import MeteredScorer, conclude
from openr.search.strategies import SEARCHES, build_search
from openr.search.strategies.deepconf import DeepConfConfig
from openr.search.strategies.deepconf import run_after as deepconf_after
from openr.search.strategies.particle_filtering import ParticleFilteringConfig, filter_from
from openr.search.waves import DEFAULT_CONFIDENCE, FIRST_WAVE_SAMPLES, SampledSolutionsConfig, WaveSampler

EFFORTS = ("low", "medium", "high")
# Token budgets of the effort levels: on openr-arith (about 92 tokens a solution)
# they afford about 4, 8 and 64 whole solutions. high was 2,000 (16 solutions)
# until beam search at n=64 answered 78.5% of arith-val against n=16's 71.0%
# (20 problems right only at n=64, 5 only at n=16; docs/eval/README.md).
DEFAULT_EFFORT_TOKENS = {"low": 500, "medium": 1000, "high": 8000}
AUTO_TABLE_FILE = "auto.json"  # in a model bundle, next to policy/ and prm/
VOTING_STRATEGIES = ("majority_vote", "best_of_n")  # these continue the probe's waves
# What a tier that needs a PRM becomes without one; it takes the probe as its warm-up.
NO_PRM_STRATEGY = "deepconf"
NO_PRM_PROBE_AGGREGATION = "confidence_vote"  # its samples carry log-probabilities, for deepconf's threshold


@dataclass(frozen=True)
class AutoTier:
    """Budgets of at least `min_tokens` run `strategy` with `options` (when the probe is not settled)."""

    min_tokens: int
    strategy: str
    options: dict[str, Any]


@dataclass(frozen=True)
class AutoTable:
    """`tiers` by ascending `min_tokens` (the first applies below it too);
    `source` says where the table came from, for the trace."""

    tiers: tuple[AutoTier, ...]
    settled_confidence: float = DEFAULT_CONFIDENCE
    effort_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EFFORT_TOKENS))
    source: str = "default"

    def tier_for(self, tokens: int | None) -> AutoTier:
        """The largest tier the budget affords; no token budget affords them all."""
        fitting = [tier for tier in self.tiers if tokens is None or tier.min_tokens <= tokens]
        return fitting[-1] if fitting else self.tiers[0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> AutoTable:
        """A table from its JSON form; raises ValueError (naming `source`) for one
        whose tiers `openr.search` would refuse."""
        try:
            tiers = tuple(sorted((AutoTier(int(t["min_tokens"]), t["strategy"], dict(t.get("options", {})))
                                  for t in data["tiers"]), key=lambda tier: tier.min_tokens))
            for tier in tiers:
                build_search(tier.strategy, tier.options)
            table = cls(tiers, float(data.get("settled_confidence", DEFAULT_CONFIDENCE)),
                        {e: int(data.get("effort_tokens", {}).get(e, DEFAULT_TABLE.effort_tokens[e])) for e in EFFORTS},
                        source)
        except (KeyError, TypeError, ValueError) as exc:  # SearchConfigError is a ValueError
            raise ValueError(f"{source}: not an auto table: {exc}") from None
        if not tiers or not 0.5 < table.settled_confidence <= 1.0:
            raise ValueError(f"{source}: an auto table needs tiers and a settled_confidence in (0.5, 1]")
        return table

    def to_json(self) -> dict[str, Any]:
        return {"settled_confidence": self.settled_confidence, "effort_tokens": self.effort_tokens,
                "tiers": [{"min_tokens": t.min_tokens, "strategy": t.strategy, "options": t.options}
                          for t in self.tiers]}


# The reasoning_effort presets, by the tokens they spend on openr-arith (about 92
# per solution), and between medium and high a tier for budgets of 2,000 tokens.
DEFAULT_TABLE = AutoTable(tiers=(
    AutoTier(0, "best_of_n", {"n": 4}),
    AutoTier(DEFAULT_EFFORT_TOKENS["medium"], "beam_search", {"n": 8, "beam_width": 2}),
    AutoTier(2000, "beam_search", {"n": 16, "beam_width": 4}),
    AutoTier(DEFAULT_EFFORT_TOKENS["high"], "beam_search", {"n": 64, "beam_width": 4}),
))


def effort_preset(effort: str, has_prm: bool) -> dict[str, Any]:
    """The fixed search OpenAI's `reasoning_effort` names (without strategy auto):
    DEFAULT_TABLE's tier for the effort's tokens, so the presets and auto's default
    tiers are one table; without a PRM, online deepconf at the same number of samples
    (votes weighted by the policy's confidence, hesitant samples halted early)."""
    tier = DEFAULT_TABLE.tier_for(DEFAULT_TABLE.effort_tokens[effort])
    if has_prm:
        return {"strategy": tier.strategy, **tier.options}
    return {"strategy": NO_PRM_STRATEGY, "n": build_search(tier.strategy, tier.options).samples}


@dataclass(frozen=True)
class AutoChoice:
    """What `decide` picked: a strategy and its options, or None to answer from the probe."""

    strategy: str | None
    options: dict[str, Any]
    why: str


def decide(table: AutoTable, tokens: int | None, confidence: float, has_prm: bool) -> AutoChoice:
    """The choice for a question whose probe answer is settled to `confidence`, under a budget of `tokens`."""
    if confidence >= table.settled_confidence:
        return AutoChoice(None, {}, f"the probe's answer is settled (confidence {confidence:.3f} >= "
                                    f"{table.settled_confidence})")
    tier = table.tier_for(tokens)
    budget = "no token budget" if tokens is None else f"a budget of {tokens} tokens"
    why = (f"the probe's answer is unsettled (confidence {confidence:.3f} < {table.settled_confidence}); "
           f"{budget} affords the tier from {tier.min_tokens} tokens")
    if has_prm or not build_search(tier.strategy, tier.options).needs_prm:
        return AutoChoice(tier.strategy, dict(tier.options), why)
    samples = build_search(tier.strategy, tier.options).samples
    return AutoChoice(NO_PRM_STRATEGY, {"n": samples},
                      f"{why}; no PRM is loaded, so online deepconf (confidence-weighted, hesitant samples "
                      f"halted) at its {samples} samples instead of {tier.strategy}")


@dataclass(frozen=True)
class AutoConfig(SearchConfig):
    """The sampling settings pass on to the chosen strategy."""

    BUDGET_OPTION: ClassVar[str | None] = "effort"

    effort: str | None = None  # low, medium or high: a budget level in place of max_tokens_total
    # Set by the server from the model bundle, never by a request.
    table: AutoTable | None = field(default=None, metadata={"request": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.effort is not None and self.effort not in EFFORTS:
            raise SearchConfigError("effort", f"effort must be one of {list(EFFORTS)}, got {self.effort!r}")

    @property
    def samples(self) -> int:
        return FIRST_WAVE_SAMPLES


def _no_larger_than_the_probe(strategy: str, config: SearchConfig, probe_aggregation) -> bool:
    """Whether `config` samples no more whole solutions than the probe, and
    would not simply continue the probe's waves (a voting strategy under the
    probe's aggregation does: its first wave is the probe)."""
    if not isinstance(config, (SampledSolutionsConfig, GroupedSamplesConfig, ParticleFilteringConfig)):
        return False  # mcts and cot: no whole solutions to compare
    continues = (strategy in VOTING_STRATEGIES
                 and AGGREGATIONS[getattr(config, "aggregation", "majority_vote")] is probe_aggregation) or (
        strategy == NO_PRM_STRATEGY and probe_aggregation.uses_confidence)
    return not continues and config.n <= FIRST_WAVE_SAMPLES


def size_after_probe(strategy: str, config: SearchConfig, probe_samples: int) -> tuple[dict[str, Any], str]:
    """The size options to run `config` with after a probe of `probe_samples`
    whole solutions, so that the two together cost about what `config` costs
    alone, and how the probe is reused, for the trace.

    best_of_n and majority_vote sample `n` whole solutions; beam_search and dvts
    sample `n` steps per depth, about `n` solutions' worth in all, in multiples
    of `beam_width`. mcts's size counts tree expansions and cot's is one greedy
    solution: no number of whole solutions to take the probe's from.
    """
    if isinstance(config, GroupedSamplesConfig):
        multiple = config.beam_width
    elif isinstance(config, SampledSolutionsConfig):
        multiple = 1
    else:
        return {}, (f"as final candidates; {strategy} ran in full, as its size counts no whole "
                    f"solutions that the probe's {probe_samples} could stand for")
    n = max(multiple, (config.n - probe_samples) // multiple * multiple)
    rule = f", a multiple of beam_width {multiple}" if multiple > 1 else ""
    return {"n": n}, (f"as final candidates; {strategy} ran n={n} of its {config.n}: its n less the probe's "
                      f"{probe_samples} samples, at least {multiple}{rule}")


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: AutoConfig, budget: Budget
) -> SearchResult:
    """Probe, decide, then hand over to the chosen strategy with the probe counted
    toward its size (continued, as particles, or subtracted: see the module docstring)."""
    table = config.table or DEFAULT_TABLE
    tokens = table.effort_tokens[config.effort] if config.effort else budget.max_tokens_total
    aggregation = AGGREGATIONS[DEFAULT_AGGREGATION if prm is not None else NO_PRM_PROBE_AGGREGATION]
    scorer = MeteredScorer(prm, problem.question, aggregation, budget) if prm is not None else None
    probe = WaveSampler(problem, policy, config, budget, aggregation, scorer)
    stop_reason = budget.exhausted()
    if stop_reason is not None:
        return conclude(problem, [], aggregation, budget, stop_reason)
    sampling = {f.name: getattr(config, f.name) for f in fields(SearchConfig)}
    unprobed = decide(table, tokens, 0.0, prm is not None)  # what an unsettled probe would hand over to
    alone = build_search(unprobed.strategy, {**sampling, **unprobed.options})
    if _no_larger_than_the_probe(unprobed.strategy, alone, aggregation):
        budget_text = "no token budget" if tokens is None else f"a budget of {tokens} tokens"
        report = {"table": table.source, "budget_tokens": tokens, "probe_samples": 0,
                  "strategy": unprobed.strategy, "options": unprobed.options, "ran_options": unprobed.options,
                  "why": f"{budget_text} affords {unprobed.strategy} with n={alone.n}, no more than the probe's "
                         f"{FIRST_WAVE_SAMPLES} solutions: a probe would take its place, so it runs alone"}
        result = await SEARCHES[unprobed.strategy].run(problem, policy, prm, alone, budget)
        return replace(result, decisions={**result.decisions, "auto": report})
    await probe.wave(FIRST_WAVE_SAMPLES)
    confidence = probe.confidence()
    choice = decide(table, tokens, confidence, prm is not None)
    report = {"table": table.source, "budget_tokens": tokens, "probe_samples": probe.drawn,
              "probe_confidence": round(confidence, 4), "strategy": choice.strategy or "probe",
              "options": choice.options, "why": choice.why}
    if choice.strategy is None:
        return conclude(problem, probe.candidates, aggregation, budget, "confident", {"auto": report})
    chosen = build_search(choice.strategy, {**sampling, **choice.options})
    final_aggregation = AGGREGATIONS[getattr(chosen, "aggregation", "majority_vote")]
    if choice.strategy in VOTING_STRATEGIES and final_aggregation is aggregation:
        report |= {"probe_reused": f"as samples: its {probe.drawn} count toward {choice.strategy}'s n={chosen.n}, "
                                   f"whose waves continue the probe's", "ran_options": choice.options}
        stop_reason = await probe.run(chosen.n, chosen.adaptive, chosen.confidence)
        return conclude(problem, probe.candidates, aggregation, budget, stop_reason, {"auto": report})
    if config.seed is not None:  # the chosen search's samples must not repeat the probe's seeds
        chosen = replace(chosen, seed=config.seed + probe.drawn)
    if isinstance(chosen, DeepConfConfig) and chosen.mode == "online" and aggregation.uses_confidence:
        report |= {"probe_reused": f"as deepconf's warm-up: its {probe.drawn} samples set the threshold and count "
                                   f"toward n={chosen.n}", "ran_options": choice.options}
        result = await deepconf_after(problem, policy, chosen, budget, probe.steps)
        return replace(result, decisions={**result.decisions, "auto": report})
    solutions = [c.scored(list(c.step_scores), final_aggregation.score(c.step_scores)) for c in probe.candidates]
    if isinstance(chosen, ParticleFilteringConfig):
        grown = max(0, chosen.n - len(solutions))
        report |= {"probe_reused": f"as particles: its {len(solutions)} solutions start particle_filtering's "
                                   f"population (n={chosen.n}), the filter grows {grown} more",
                   "ran_options": choice.options}
        result = await filter_from(problem, policy, prm, chosen, budget, solutions)
        return replace(result, decisions={**result.decisions, "auto": report})
    resized, reuse = size_after_probe(choice.strategy, chosen, probe.drawn)
    chosen = replace(chosen, **resized)
    report |= {"probe_reused": reuse, "ran_options": {**choice.options, **resized}}
    result = await SEARCHES[choice.strategy].run(problem, policy, prm, chosen, budget)
    return conclude(problem, solutions + list(result.candidates), final_aggregation, budget, result.stop_reason,
                    {**result.decisions, "auto": report})

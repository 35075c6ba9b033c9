"""The settings every search strategy shares, and the one error their validation raises.

Configs are frozen dataclasses checked on construction, so a bad request fails
before any tokens are spent; `SearchConfigError.field` names the offending field
so the server can answer HTTP 400 with `param: "search.<field>"`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from openr.contracts import MAX_TEMPERATURE
from openr.search.aggregation import AGGREGATIONS

# Upper limits that keep one request from monopolising the engine; the units are
# in the names.
MAX_SAMPLES = 256
MAX_STEPS = 256
MAX_STEP_TOKENS = 32_768

DEFAULT_MAX_STEPS = 32
DEFAULT_MAX_STEP_TOKENS = 512
# Sampled strategies need diversity; 0.8 is what search-and-learn uses for its
# PRM-guided searches.
DEFAULT_TEMPERATURE = 0.8
# Min over steps: a solution is only as sound as its weakest step (Lightman et
# al., Math-Shepherd).
DEFAULT_AGGREGATION = "prm_min_max"


class SearchConfigError(ValueError):
    """A search setting that cannot be used; `field` is the setting's name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_int(field: str, value: object, low: int, high: int) -> None:
    """Raise unless `value` is an integer in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise SearchConfigError(field, f"{field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SearchConfigError(field, f"{field} must be between {low} and {high}, got {value}")


def check_float(field: str, value: object, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise unless `value` is a number in [low, high] (or (low, high] with `low_open`)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SearchConfigError(field, f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):  # NaN passes every comparison below
        raise SearchConfigError(field, f"{field} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise SearchConfigError(field, f"{field} must be in {bracket}{low}, {high}], got {value}")


def check_aggregation(value: object) -> None:
    if not isinstance(value, str) or value not in AGGREGATIONS:
        raise SearchConfigError(
            "aggregation", f"aggregation must be one of {sorted(AGGREGATIONS)}, got {value!r}"
        )


def check_prm_aggregation(value: object) -> None:
    """An aggregation a PRM-guided search can prune by: a PRM's, or majority_vote."""
    check_aggregation(value)
    if AGGREGATIONS[value].uses_confidence:
        raise SearchConfigError("aggregation", f"{value} ranks by the policy's confidence, not a PRM's scores: "
                                "best_of_n and majority_vote take it, PRM-guided searches do not")


def check_divides(n: int, beam_width: int) -> None:
    """Tree searches split `n` samples per depth evenly over `beam_width` groups."""
    check_int("beam_width", beam_width, 1, MAX_SAMPLES)
    if n % beam_width:
        raise SearchConfigError("n", f"n must be a multiple of beam_width ({beam_width}), got {n}")


@dataclass(frozen=True)
class SearchConfig:
    """Sampling settings shared by every strategy.

    Strategies that sample whole solutions in one call (cot, majority_vote,
    best_of_n, MCTS rollouts) cap each at `max_steps * max_step_tokens` tokens.
    """

    # The option that sizes the budget (`n`, `num_simulations`, ...), None for a
    # fixed size; evaluation sweeps it, `openr.search.registry.budget_option` answers it.
    BUDGET_OPTION: ClassVar[str | None] = None

    max_steps: int = DEFAULT_MAX_STEPS
    max_step_tokens: int = DEFAULT_MAX_STEP_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    # Seeds the policy's sampling; every sample of a search gets its own seed
    # counted up from this one, so a seeded search is reproducible.
    seed: int | None = None

    def __post_init__(self) -> None:
        check_int("max_steps", self.max_steps, 1, MAX_STEPS)
        check_int("max_step_tokens", self.max_step_tokens, 1, MAX_STEP_TOKENS)
        check_float("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**63 - 1)

    @property
    def needs_prm(self) -> bool:
        """Whether the strategy scores steps, so it cannot run without a PRM: the
        one place this is decided (the server, evaluation and the strategies all ask it)."""
        return False

    @property
    def samples(self) -> int:
        """Samples the search draws per round (per depth, for trees): what
        the server's --search-max-samples caps."""
        return 1

    @property
    def max_solution_tokens(self) -> int:
        return self.max_steps * self.max_step_tokens


DEFAULT_SAMPLES_PER_DEPTH = 16
DEFAULT_BEAM_WIDTH = 4


@dataclass(frozen=True)
class PrmGuidedConfig(SearchConfig):
    """Searches steered by PRM scores as they go (tree searches, MCTS, particle
    filtering): they need the PRM even when `aggregation` is `majority_vote`,
    which then only picks the final answer among what the search kept."""

    aggregation: str = DEFAULT_AGGREGATION

    def __post_init__(self) -> None:
        super().__post_init__()
        check_prm_aggregation(self.aggregation)

    @property
    def needs_prm(self) -> bool:
        return True


@dataclass(frozen=True)
class GroupedSamplesConfig(PrmGuidedConfig):
    """Beam search and DVTS: `n` candidate steps per depth, split evenly over
    `beam_width` groups (beams, or subtree children), ranked by `aggregation`;
    both prune by the aggregation's step reduction at every depth.
    """

    BUDGET_OPTION: ClassVar[str | None] = "n"

    n: int = DEFAULT_SAMPLES_PER_DEPTH
    beam_width: int = DEFAULT_BEAM_WIDTH

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)
        check_divides(self.n, self.beam_width)

    @property
    def samples(self) -> int:
        return self.n

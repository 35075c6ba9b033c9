"""What a search may spend, counted as it is spent: generated tokens, PRM calls, seconds.

A strategy checks `exhausted()` before each round of work (one batched policy
call and the PRM call that scores it) and, when a limit is reached, stops and
returns its best solution so far. A round already started runs to its end, so
the tokens it paid for get scored (as far as the PRM limit allows).

Units:
- tokens: tokens the policy generated (prompt tokens are not counted). Each
  policy call's per-sample cap is lowered to the remaining tokens split over its
  samples, so a search overshoots only when fewer tokens remain than samples in
  the call, and then by less than one token per sample.
- prm_calls: candidate solutions scored, one PRM forward pass each (however
  many of its steps get scores). A PRM call is trimmed to the calls left, so
  this limit is never exceeded.
- time: wall-clock seconds since the budget was made, checked between rounds.
  Run through `run_strategy` (as the server does), a round still in flight at
  the deadline is cancelled (its engine requests and PRM calls with it) and the
  search answers with the candidates of its last finished round, which
  strategies report with `record_progress`.

It also notes where the seconds went (`policy_wait`, `prm_wait`), for the
trace: a search that is slow under load is slow for a reason it can name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from openr.search.candidates import BudgetReason, Candidate, SearchTiming
from openr.search.config import check_float, check_int

if TYPE_CHECKING:
    from openr.search.aggregation import Aggregation

# Large enough for any real request, small enough that a typo cannot pin the
# server for days.
MAX_TOKENS_TOTAL = 10_000_000
MAX_PRM_CALLS = 1_000_000
MAX_SECONDS = 3600.0


class Awaited:
    """Seconds a search spent awaiting one service (the policy, the PRM) and
    the calls it made to it; calls never overlap, as strategies await each."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self.seconds = 0.0
        self.calls = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the block as one call; a call cut off (cancelled at the deadline) counts too."""
        started = self._clock()
        try:
            yield
        finally:
            self.seconds += self._clock() - started
            self.calls += 1


class Budget:
    """Limits (None = unlimited) and the running totals charged against them."""

    def __init__(
        self,
        max_tokens_total: int | None = None,
        max_prm_calls: int | None = None,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_tokens_total is not None:
            check_int("max_tokens_total", max_tokens_total, 1, MAX_TOKENS_TOTAL)
        if max_prm_calls is not None:
            check_int("max_prm_calls", max_prm_calls, 1, MAX_PRM_CALLS)
        if max_seconds is not None:
            check_float("max_seconds", max_seconds, 0.0, MAX_SECONDS, low_open=True)
        self.max_tokens_total = max_tokens_total
        self.max_prm_calls = max_prm_calls
        self.max_seconds = max_seconds
        self._clock = clock
        self._started = clock()
        self.tokens_generated = 0
        self.prm_calls = 0
        # Set when a cap this budget imposed cut work short inside a round.
        self.cut_reason: BudgetReason | None = None
        # What the search would answer if stopped now, and how it ranks it.
        self.progress: tuple[list[Candidate], Aggregation] | None = None
        # What the search says of its progress beyond the counts (a streamed search shows it).
        self.note = ""
        self.policy_wait = Awaited(clock)
        self.prm_wait = Awaited(clock)

    @property
    def elapsed_seconds(self) -> float:
        return self._clock() - self._started

    def timing(self) -> SearchTiming:
        """Where the seconds spent so far went."""
        return SearchTiming(self.elapsed_seconds, self.policy_wait.seconds, self.prm_wait.seconds,
                            self.policy_wait.calls, self.prm_wait.calls)

    def seconds_left(self) -> float | None:
        """Wall-clock seconds before the time limit (None: no limit)."""
        return None if self.max_seconds is None else self.max_seconds - self.elapsed_seconds

    def record_progress(self, candidates: Sequence[Candidate], aggregation: Aggregation) -> None:
        """Strategies call this after each round with what they would answer now."""
        self.progress = (list(candidates), aggregation)

    def exhausted(self) -> BudgetReason | None:
        """The first limit reached, or None while all have room."""
        if self.max_tokens_total is not None and self.tokens_generated >= self.max_tokens_total:
            return "tokens"
        if self.max_prm_calls is not None and self.prm_calls >= self.max_prm_calls:
            return "prm_calls"
        if self.max_seconds is not None and self.elapsed_seconds >= self.max_seconds:
            return "time"
        return None

    def token_cap(self, max_tokens: int, samples: int) -> int:
        """The per-sample token cap for a policy call of `samples` samples."""
        if self.max_tokens_total is None:
            return max_tokens
        share = (self.max_tokens_total - self.tokens_generated) // max(samples, 1)
        return max(1, min(max_tokens, share))

    def prm_cap(self, candidates: int) -> int:
        """How many of `candidates` the PRM may score now."""
        if self.max_prm_calls is None:
            return candidates
        return max(0, min(candidates, self.max_prm_calls - self.prm_calls))

    def charge_tokens(self, n: int) -> None:
        self.tokens_generated += n

    def charge_prm(self, n: int) -> None:
        self.prm_calls += n

    def record_cut(self, reason: BudgetReason) -> None:
        """Note that a cap from this budget cut a sample or a PRM batch short."""
        self.cut_reason = self.cut_reason or reason


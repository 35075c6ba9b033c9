"""Where an engine call's time went: waiting for the batch, prefilling, decoding.

A backend that can tell stamps each sample (`SampleTiming`, on its last
delta); `call_timing` folds the samples of one call (a `generate_steps`, or a
request's n samples) into one `CallTiming`, which the server exports as vLLM
exports its request timings. It exists because a loaded search's policy time
is otherwise one number, and what to fix depends on which part dominates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleTiming:
    """One sample as the engine ran it, in `time.monotonic()` seconds: when its
    prefill started (it entered the running batch), how long the prefill took
    (to its first token), and when its last token came."""

    started: float
    prefill_s: float
    finished: float

    @property
    def prefill_end(self) -> float:
        return self.started + self.prefill_s


@dataclass(frozen=True)
class CallTiming:
    """One engine call's time, split so the parts add up to its whole:
    `queue_s` while some of its samples still waited to enter the batch (its
    own prefills aside), `prefill_s` while a prefill of its samples ran, and
    `decode_s` the rest, until its last sample finished."""

    queue_s: float
    prefill_s: float
    decode_s: float

    @property
    def inference_s(self) -> float:
        """From its first prefill to its end: what it spent in the batch."""
        return self.prefill_s + self.decode_s


def call_timing(submitted: float, samples: Sequence[SampleTiming]) -> CallTiming:
    """The timing of a call sent at `submitted` whose samples ran as `samples`.

    A call's samples need not start together: the hf engine takes in as many
    as its batch has room for and the rest join later, so the whole call waits
    until its last sample started. That wait counts as queue even while its
    first samples already decode, since the call cannot end before the last
    one runs. Prefills that overlap (vLLM batches them) count once.
    """
    last_start = max(s.started for s in samples)
    end = max(s.finished for s in samples)
    intervals = sorted((s.started, s.prefill_end) for s in samples)
    prefill = before_last_start = 0.0
    run_start, run_end = intervals[0]
    for start, stop in [*intervals[1:], (float("inf"), float("inf"))]:
        if start > run_end:  # the merged run of overlapping prefills ends here
            prefill += run_end - run_start
            before_last_start += max(0.0, min(run_end, last_start) - run_start)
            run_start, run_end = start, stop
        else:
            run_end = max(run_end, stop)
    queue = max(0.0, last_start - submitted - before_last_start)
    return CallTiming(queue, prefill, max(0.0, end - submitted - queue - prefill))

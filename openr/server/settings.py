"""What `openr serve`'s flags decide about serving, in one object built once.

The flags take their defaults from these fields, and `build_app` takes the
object as it is, so no default is written twice. Flags that only shape how the
engine or the PRM load (batch sizes of a forward pass, the prefix cache) keep
their defaults in the engine and PRM modules, which own them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openr.prm.batcher import DEFAULT_MAX_WAIT_MS, DEFAULT_MICRO_BATCH_SIZE
from openr.search.auto import AutoTable
from openr.search.defaults import SearchDefaults
from openr.session import DEFAULT_SESSION_HEADER
from openr.tasks.problem import STEP_SEPARATOR


@dataclass(frozen=True)
class SearchLimits:
    """Server-wide defaults and ceilings for search requests, laid over the
    ranges `openr.search` itself accepts."""

    default_strategy: str = "beam_search"
    max_samples: int = 256  # largest `SearchConfig.samples` (search.n; mcts: n_children x num_simulations)
    # Largest generation budget per request, in tokens: max_samples x 1,024, so that a search at the largest n
    # is not cut by it: 100,000 cut 5 of 100 n=256 searches on arith's longest problems (docs/eval, issue 27).
    max_tokens_total: int = 262_144
    default_timeout_s: float = 120.0
    max_timeout_s: float = 600.0
    auto_table: AutoTable | None = None  # strategy "auto"'s decision table (None: its documented default)
    search_defaults: SearchDefaults | None = None  # the model's sampling settings by strategy and n (None: built-in)


@dataclass(frozen=True)
class ServerSettings:
    """Limits and knobs of the serving layer (auth, admission, choices, search, PRM batching)."""

    api_key: str | None = None  # required as 'Authorization: Bearer KEY' on /v1/*; None: open
    max_concurrent: int = 32  # requests generated at once
    max_queue: int = 128  # requests allowed to wait for a slot; beyond that 429
    max_n: int = 16  # largest `n` (choices) of one request
    max_request_bytes: int = 4 * 1024 * 1024  # larger bodies get a 413 (a chat body this size is ~1M tokens)
    search: SearchLimits = field(default_factory=SearchLimits)
    prm_micro_batch_size: int = DEFAULT_MICRO_BATCH_SIZE  # candidates per PRM batch, across requests
    prm_max_wait_ms: float = DEFAULT_MAX_WAIT_MS  # how long a PRM call may wait for others to join
    step_separator: str = STEP_SEPARATOR  # what the policy writes between reasoning steps (search's stop string)
    session_header: str = DEFAULT_SESSION_HEADER  # carries each search's session key to remote backends

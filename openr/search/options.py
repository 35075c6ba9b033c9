"""The one parser of a request's `search` options: a strategy name, its typed
config and its budget, each option checked once, against its own range.

The server lays its presets and defaults over the options before calling
`parse_search`, and checks its own ceilings (`--search-max-samples`, ...) on
the typed result afterwards; it never reads the options dict itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from openr.search.auto import AutoTable
from openr.search.budget import Budget
from openr.search.config import SearchConfig, SearchConfigError
from openr.search.defaults import SearchDefaults
from openr.search.registry import build_config

# Budget options, as a request names them -> as `Budget` takes them.
BUDGET_OPTIONS = {"max_tokens_total": "max_tokens_total", "max_prm_calls": "max_prm_calls",
                  "timeout_s": "max_seconds"}


@dataclass(frozen=True)
class SearchPlan:
    """A parsed `search` object: what to run, with which config, under which budget."""

    strategy: str
    config: SearchConfig
    budget: Budget
    return_trace: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # what the model's search defaults filled in


def parse_search(options: Mapping[str, Any], *, default_strategy: str | None = None,
                 default_max_tokens_total: int | None = None,
                 default_timeout_s: float | None = None, auto_table: AutoTable | None = None,
                 defaults: SearchDefaults | None = None) -> SearchPlan:
    """Turn a request's `search` options into a plan (defaults for what is missing);
    `auto_table` is the model's decision table for strategy "auto" (None: the default),
    `defaults` the model's own sampling settings by strategy and n (None: the built-in ones).

    Raises SearchConfigError whose `field` is the option's name as the request
    spells it (`n`, `timeout_s`, ...), before anything runs.
    """
    options = dict(options)
    strategy = options.pop("strategy", default_strategy)
    trace = options.pop("return_trace", False)
    limits = {"max_tokens_total": options.pop("max_tokens_total", default_max_tokens_total),
              "max_prm_calls": options.pop("max_prm_calls", None),
              "timeout_s": options.pop("timeout_s", default_timeout_s)}
    filled = defaults.fill(strategy, options) if defaults is not None else {}
    config = build_config(strategy, {**filled, **options})
    if strategy == "auto" and auto_table is not None:
        config = replace(config, table=auto_table)
    if not isinstance(trace, bool):
        raise SearchConfigError("return_trace", f"return_trace must be true or false, got {trace!r}")
    return SearchPlan(strategy, config, build_budget(**limits), trace, filled)


def build_budget(max_tokens_total: int | None = None, max_prm_calls: int | None = None,
                 timeout_s: float | None = None) -> Budget:
    """A budget from request options; `Budget` owns their ranges, errors name the request's field."""
    try:
        return Budget(max_tokens_total=max_tokens_total, max_prm_calls=max_prm_calls, max_seconds=timeout_s)
    except SearchConfigError as exc:
        request_name = {budget_name: name for name, budget_name in BUDGET_OPTIONS.items()}[exc.field]
        raise SearchConfigError(request_name, str(exc).replace(exc.field, request_name)) from None

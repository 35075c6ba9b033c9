"""A model's own search defaults: the sampling settings chosen for it on
validation data (temperature, beam width, ...), by strategy and budget.

A model bundle may hold them in `search.json`, next to `auto.json`:

    {"chosen_on": "...", "command": "...",
     "strategies": {"beam_search": [{"min_n": 64, "options": {"beam_width": 16, "temperature": 1.0}}]}}

For a request of a listed strategy, the tier with the largest `min_n` at or
below the request's n (given, or the strategy's default) supplies the options
the request leaves unset. The request's own options always win, and a default
the request's n cannot take (a beam width that does not divide it) is left
out, so the built-in default applies as it would without the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openr.search.config import SearchConfigError
from openr.search.registry import budget_option, build_config

SEARCH_DEFAULTS_FILE = "search.json"  # in a model bundle, next to policy/ and prm/


@dataclass(frozen=True)
class DefaultsTier:
    min_n: int
    options: dict[str, Any]


@dataclass(frozen=True)
class SearchDefaults:
    """Tiers by strategy, each list by ascending `min_n`; `source` names the file, for the trace."""

    strategies: dict[str, tuple[DefaultsTier, ...]] = field(default_factory=dict)
    source: str = "none"

    def fill(self, strategy: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults this request gets: those of its tier that it leaves unset
        and that its config accepts (empty for an unlisted strategy)."""
        tiers = self.strategies.get(strategy or "", ())
        if not tiers:
            return {}
        n = options["n"] if "n" in options else getattr(build_config(strategy, options), "n", None)
        fitting = [tier for tier in tiers if isinstance(n, int) and tier.min_n <= n]
        if not fitting:
            return {}
        filled: dict[str, Any] = {}
        for key, value in fitting[-1].options.items():
            if key in options:
                continue
            try:
                build_config(strategy, {**options, **filled, key: value})
            except SearchConfigError:
                continue  # e.g. a beam width this n is no multiple of: the built-in default stays
            filled[key] = value
        return filled

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> SearchDefaults:
        """Defaults from their JSON form; raises ValueError (naming `source`) for a
        strategy without an n, or options the strategy would refuse at its tier's n."""
        try:
            strategies = {}
            for strategy, tiers in data["strategies"].items():
                if budget_option(strategy) != "n":
                    raise ValueError(f"strategy {strategy!r} is not sized by n")
                parsed = tuple(sorted((DefaultsTier(int(t["min_n"]), dict(t["options"])) for t in tiers),
                                      key=lambda tier: tier.min_n))
                for tier in parsed:
                    build_config(strategy, {"n": tier.min_n, **tier.options})
                strategies[strategy] = parsed
        except (KeyError, TypeError, ValueError) as exc:  # SearchConfigError is a ValueError
            raise ValueError(f"{source}: not a search defaults file: {exc}") from None
        return cls(strategies, source)

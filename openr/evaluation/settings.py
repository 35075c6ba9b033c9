"""The grid of search settings an evaluation sweeps: strategies x budgets.

Each setting is a name plus the exact JSON it adds to a chat request (the SDK's
`extra_body`), so a results row can always be traced back to what was asked,
and a resumed run can check it is asking the same thing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from openr.search import EFFORTS, STRATEGIES, SearchConfigError, budget_option, build_config, parse_search, takes_option

# What each strategy takes is the registry's to say (`budget_option`, `takes_option`):
# a strategy's budget is its `n` (samples; per depth for trees, particles for
# particle_filtering), `num_simulations` (mcts), `effort` (auto) or nothing (cot);
# those taking `beam_width` split n over beams; those taking `adaptive` can stop
# adaptively with --adaptive, and their settings' names then end in ADAPTIVE_SUFFIX.
ADAPTIVE_SUFFIX = "-adaptive"
ADAPTIVE_STRATEGIES = tuple(name for name in STRATEGIES if takes_option(name, "adaptive"))
# The strategy column of a reasoning_effort setting: the server picks the search.
EFFORT_STRATEGY = "reasoning_effort"
COT_BUDGET = 1  # one greedy solution
# The --dataset values for the held-out arith test split and for the validation
# split (training-distribution problems no training stage used); anything else is a jsonl path.
ARITH_DATASET = "arith"
ARITH_VALIDATION_DATASET = "arith-val"
ARITH_DATASETS = (ARITH_DATASET, ARITH_VALIDATION_DATASET)


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: `request` is merged into every chat request's body."""

    name: str
    strategy: str
    budget: int | str  # samples (n), MCTS simulations, or a reasoning_effort level
    request: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The setting as run.json records it (everything but the name, which is its key)."""
        record = asdict(self)
        del record["name"]
        return record


def build_grid(strategies: Sequence[str], budgets: Sequence[int], *, beam_width: int,
               mcts_simulations: Sequence[int], mcts_children: int | None = None, efforts: Sequence[str] = (),
               aggregation: str | None = None, search_options: dict[str, Any] | None = None,
               adaptive: bool = False, modes: Sequence[str] = ()) -> list[Setting]:
    """Settings in plotting order: per strategy, budgets ascending; then the efforts.

    `search_options` (max_steps, seed, temperature, ...) go into every request's `search`
    object (temperature into every one but cot's, which stays greedy);
    `adaptive` makes the ADAPTIVE_STRATEGIES stop adaptively (named "...-adaptive").
    A strategy with modes (deepconf: online, offline) runs in each of `modes`
    (none given: its default), a setting named "...-MODE" for each but the default.
    auto runs at each of the EFFORTS (search.effort), its budget levels.
    Raises ValueError for a grid the server would reject as a whole.
    """
    common = {key: value for key, value in (search_options or {}).items() if value is not None}
    settings: list[Setting] = []
    for strategy in dict.fromkeys(strategies):  # keeps order, drops repeats
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        extra = {"aggregation": aggregation} if aggregation and takes_option(strategy, "aggregation") else {}
        sized_by = budget_option(strategy)
        if sized_by is None:  # cot: one greedy solution, whatever temperature the samplers get
            greedy = {key: value for key, value in common.items() if key != "temperature"}
            settings.append(_search_setting(strategy, strategy, COT_BUDGET, greedy))
        elif sized_by == "effort":
            for effort in EFFORTS:
                settings.append(_search_setting(f"{strategy}-{effort}", strategy, effort,
                                                {"effort": effort, **common}))
        elif sized_by == "num_simulations":
            if mcts_children is not None:
                extra["n_children"] = mcts_children
            for sims in _ascending(mcts_simulations, "--mcts-simulations"):
                settings.append(_search_setting(f"{strategy}-sims{sims}", strategy, sims,
                                                {"num_simulations": sims, **extra, **common}))
        else:
            if adaptive and takes_option(strategy, "adaptive"):
                extra["adaptive"] = True
            for mode in (modes or [None]) if takes_option(strategy, "mode") else [None]:
                moded = {**extra, "mode": mode} if mode else extra
                for n in _ascending(budgets, "--n"):
                    settings.append(_sampling_setting(strategy, n, beam_width, {**moded, **common}))
    for effort in sorted(dict.fromkeys(efforts), key=EFFORTS.index):
        request: dict[str, Any] = {"reasoning_effort": effort}
        if common:
            request["search"] = dict(common)  # the server lays these over its preset
        settings.append(Setting(f"effort-{effort}", EFFORT_STRATEGY, effort, request))
    return settings


def budget_label(strategy: str, budget: int | str) -> str:
    """How a plot names a budget: "n=4", "sims=8", "low" (effort and auto); cot has a single point and no label."""
    if strategy not in STRATEGIES:  # a reasoning_effort setting: its level
        return str(budget)
    return {None: "", "num_simulations": f"sims={budget}", "n": f"n={budget}"}.get(budget_option(strategy), str(budget))


def needs_prm(setting: Setting) -> bool:
    """Whether the server must have a PRM attached to the model to run `setting`:
    as `openr.search` decides it for the server. A reasoning_effort setting never
    does (without a PRM the server picks a voting preset)."""
    search = setting.request.get("search")
    if setting.strategy == EFFORT_STRATEGY or search is None:
        return False
    return parse_search(search).config.needs_prm


def _ascending(values: Sequence[int], flag: str) -> list[int]:
    if not values or min(values) < 1:
        raise ValueError(f"{flag} needs one or more positive budgets, got {values}")
    return sorted(set(values))


def _sampling_setting(strategy: str, n: int, beam_width: int, options: dict[str, Any]) -> Setting:
    if not takes_option(strategy, "beam_width"):
        suffix = ADAPTIVE_SUFFIX if options.get("adaptive") else ""
        mode = options.get("mode")
        if mode and mode != STRATEGIES[strategy].config_type.mode:  # the default mode's settings keep plain names
            suffix += f"-{mode}"
        return _search_setting(f"{strategy}-n{n}{suffix}", strategy, n, {"n": n, **options})
    # A budget below the beam width gets as many beams as samples (n=1: one beam).
    width = min(beam_width, n)
    return _search_setting(f"{strategy}-n{n}-bw{width}", strategy, n, {"n": n, "beam_width": width, **options})


def _search_setting(name: str, strategy: str, budget: int | str, options: dict[str, Any]) -> Setting:
    """The setting, checked as the server will check it (`openr.search` owns the rules)."""
    try:
        build_config(strategy, options)
    except SearchConfigError as exc:
        raise ValueError(f"{name}: search.{exc.field}: {exc}") from None
    return Setting(name, strategy, budget, {"search": {"strategy": strategy, **options}})

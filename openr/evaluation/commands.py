"""`openr eval`: sweep search strategies and budgets over a problem set against a
running server and report accuracy against generated tokens (the scaling law).

Only the HTTP API and `openr.tasks` are used, so any OpenAI-compatible server
that understands `extra_body.search` (or just `reasoning_effort`) can be measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from openr.cli_flags import positive_int
from openr.evaluation.settings import (
    ADAPTIVE_STRATEGIES,
    ARITH_DATASET,
    ARITH_DATASETS,
    ARITH_VALIDATION_DATASET,
    build_grid,
)
from openr.search import DEFAULT_BEAM_WIDTH, EFFORTS, STRATEGIES
from openr.server.settings import SearchLimits

if TYPE_CHECKING:
    from openr.evaluation.report import Summary
    from openr.evaluation.sweep import Sweep

DEFAULT_STRATEGIES = ("cot", "majority_vote", "best_of_n", "beam_search")
DEFAULT_BUDGETS = (1, 4, 16)  # --n: samples per problem (per depth, for beam_search and dvts)
DEFAULT_MCTS_SIMULATIONS = (4, 8)
DEFAULT_CONCURRENCY = 8  # requests in flight
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # `openr serve` on its default port
DEFAULT_TIMEOUT_S = SearchLimits.max_timeout_s  # the largest search time `openr serve` allows by default

EXAMPLES = """\
outputs (in --out DIR):
  results.jsonl          one row per problem x setting: answer, extracted answer, gold, correct,
                         completion and reasoning tokens, latency, error (a failed request is a
                         row with `error` set, counted as incorrect)
  table.md               per setting: accuracy, mean tokens, mean latency, N, errors
  accuracy_vs_tokens.png accuracy against mean generated tokens per problem, one line per strategy,
                         points labelled with their budget
  run.json, command.txt  the model, dataset and settings the rows answer; this command line

Rows are appended as requests finish, so an interrupted run resumes where it stopped:
rerun the same command and only the missing problem x setting pairs are asked,
and those that failed or that the time budget cut (the machine, not the search, shaped them).

examples:
  # the default sweep on 100 held-out arith problems, against `openr serve` on this machine
  openr eval --dataset arith --limit 100 --out runs/arith

  # self-consistency vs. PRM best-of-n at 1..64 samples on MATH500, 16 requests in flight
  openr eval --dataset data/math500.jsonl --strategies majority_vote best_of_n --n 1 4 16 64 \\
      --concurrency 16 --out runs/math500

  # the server's reasoning_effort presets instead of named strategies
  openr eval --reasoning-effort low medium high --limit 200 --out runs/effort

  # fit strategy auto's decision table on the validation split (never the test split)
  openr eval --dataset arith-val --limit 200 --strategies cot majority_vote best_of_n beam_search \
      particle_filtering --n 4 16 --fit-auto openr/models/openr-arith/auto.json --out runs/arith-val

  # MCTS at 4 and 8 simulations next to beam search, on a remote server
  openr eval --base-url http://gpu-box:8000/v1 --api-key $KEY --strategies beam_search mcts \\
      --n 4 16 --mcts-simulations 4 8 --out runs/trees

best_of_n, beam_search, dvts and mcts score steps with a PRM: the model must be served with one
(its /v1/models card lists "prm"), unless --aggregation majority_vote. Otherwise the run stops
before sending a request.
"""
_PARSER_TEXT = {"description": __doc__, "epilog": EXAMPLES, "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="accuracy against search budget (the scaling law) on a problem set",
                                   **_PARSER_TEXT)
    _add_arguments(parser)
    parser.set_defaults(func=lambda args: run(args, ["openr", *sys.argv[1:]]))


def main(argv: list[str]) -> list[Summary]:
    """`openr eval ARGV` in-process; returns the per-setting summaries (also in table.md)."""
    parser = argparse.ArgumentParser(prog="openr eval", **_PARSER_TEXT)
    _add_arguments(parser)
    return run(parser.parse_args(argv), ["openr", "eval", *argv])


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("problems")
    data.add_argument("--dataset", default=ARITH_DATASET,
                      help=f"`{ARITH_DATASET}` (the 500 held-out arith test problems, the default), "
                           f"`{ARITH_VALIDATION_DATASET}` (500 arith problems from a seed no training stage used, "
                           "for tuning) or the path of a GSM8K- or MATH500-format jsonl file")
    data.add_argument("--limit", type=positive_int, default=None,
                      help="evaluate this many problems, drawn with --seed (default: all)")
    data.add_argument("--seed", type=int, default=0,
                      help="seeds the problem draw and every search (search.seed), so a run is repeatable "
                           "(default: %(default)s)")
    grid = parser.add_argument_group("settings (each strategy x each of its budgets)")
    grid.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=None, metavar="STRATEGY",
                      help=f"search strategies, from: {' '.join(STRATEGIES)}. cot is one greedy solution; "
                           "mcts takes its budgets from --mcts-simulations, the others from --n (default: "
                           f"{' '.join(DEFAULT_STRATEGIES)}; none when --reasoning-effort is given)")
    grid.add_argument("--n", nargs="+", type=positive_int, default=list(DEFAULT_BUDGETS), metavar="N",
                      help="budgets: samples per problem (majority_vote, best_of_n), or per depth "
                           f"(beam_search, dvts) (default: {_spaced(DEFAULT_BUDGETS)})")
    grid.add_argument("--beam-width", type=positive_int, default=DEFAULT_BEAM_WIDTH,
                      help="beams kept by beam_search and dvts; each --n must be a multiple of it, and a "
                           "smaller n gets n beams (default: %(default)s)")
    grid.add_argument("--mcts-simulations", nargs="+", type=positive_int, default=list(DEFAULT_MCTS_SIMULATIONS),
                      metavar="SIMS",
                      help=f"budgets of mcts: simulations per problem (default: {_spaced(DEFAULT_MCTS_SIMULATIONS)})")
    grid.add_argument("--mcts-children", type=positive_int, default=None,
                      help="steps mcts samples per expansion (default: the server's)")
    grid.add_argument("--aggregation", default=None,
                      help="how PRM strategies pick the answer, e.g. prm_min_max, prm_last_vote, majority_vote "
                           "(default: the server's)")
    grid.add_argument("--reasoning-effort", nargs="+", choices=EFFORTS, default=[], metavar="EFFORT",
                      help="also (or, without --strategies, only) evaluate OpenAI's reasoning_effort levels "
                           f"({' '.join(EFFORTS)}), which the server maps to preset searches")
    grid.add_argument("--adaptive", action="store_true",
                      help=f"{' and '.join(ADAPTIVE_STRATEGIES)} stop adaptively (search.adaptive): each --n is "
                           "then at most that many samples, and the settings are named ...-adaptive")
    grid.add_argument("--modes", nargs="+", choices=("online", "offline"), default=[], metavar="MODE",
                      help="deepconf's modes to run (search.mode: online, offline), each at every --n; settings "
                           "in a mode other than its default (online) are named ...-MODE (default: online)")
    grid.add_argument("--fit-auto", default=None, metavar="PATH",
                      help="after the sweep, fit strategy auto's decision table from the fixed strategies' "
                           "accuracy and tokens and write it to PATH (e.g. a model bundle's auto.json); refused "
                           f"on the test split `{ARITH_DATASET}`: use `{ARITH_VALIDATION_DATASET}`")
    grid.add_argument("--max-steps", type=positive_int, default=None,
                      help="search.max_steps: reasoning steps per solution (default: the server's)")
    grid.add_argument("--max-step-tokens", type=positive_int, default=None,
                      help="search.max_step_tokens: tokens per step (default: the server's)")
    grid.add_argument("--temperature", type=float, default=None,
                      help="search.temperature of every sampling strategy (cot stays greedy); choose it on "
                           f"`{ARITH_VALIDATION_DATASET}` (default: the server's)")
    grid.add_argument("--max-tokens", type=positive_int, default=None,
                      help="max_completion_tokens: every token one request may generate, search included "
                           "(default: unset, so the budget alone decides, up to the server's ceiling)")
    budgets = parser.add_argument_group("budgets and grading (recorded in OUT/run.json; a resumed run must match)")
    budgets.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                         help="search.timeout_s sent with every search: a scaling-law run should measure the "
                              "search, not the machine, so the default is the server's largest allowed "
                              "(%(default)s s; `openr serve --search-max-timeout`), never its latency default; "
                              "0 sends none (the server's default applies, as runs recorded before this flag did)")
    budgets.add_argument("--max-tokens-total", type=positive_int, default=None,
                         help="search.max_tokens_total sent with every search (default: not sent)")
    budgets.add_argument("--lenient", action="store_true",
                         help="also grade answers that state no final answer (\\boxed{}, '#### X', 'The answer "
                              "is X') by their last number; by default they count as wrong")
    server = parser.add_argument_group("server")
    server.add_argument("--base-url", default=DEFAULT_BASE_URL, help="the server's /v1 URL (default: %(default)s)")
    server.add_argument("--api-key", default=os.environ.get("OPENR_API_KEY", "none"),
                        help="the server's API key (default: $OPENR_API_KEY)")
    server.add_argument("--model", default=None, help="model to evaluate (default: the first the server lists)")
    server.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                        help="requests in flight; the server queues what it cannot run at once "
                             "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="output directory; a run already in it is resumed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _spaced(values: tuple[int, ...]) -> str:
    return " ".join(map(str, values))


def sweep_from_args(args: argparse.Namespace) -> Sweep:
    """The validated run the flags describe; a grid the server would reject exits here, before any request."""
    from openr.evaluation.answers import Grading
    from openr.evaluation.sweep import Sweep

    if args.dataset not in ARITH_DATASETS and not Path(args.dataset).is_file():
        raise SystemExit(f"openr eval: --dataset is neither one of {', '.join(ARITH_DATASETS)} nor a file: "
                         f"{args.dataset}")
    if args.timeout_s < 0:
        raise SystemExit(f"openr eval: --timeout-s must be >= 0 (0 sends none), got {args.timeout_s}")
    if args.fit_auto and args.dataset == ARITH_DATASET:
        raise SystemExit(f"openr eval: --fit-auto fits on a validation split, never the test split "
                         f"`{ARITH_DATASET}`: use --dataset {ARITH_VALIDATION_DATASET}")
    strategies = args.strategies
    if strategies is None:
        strategies = [] if args.reasoning_effort else list(DEFAULT_STRATEGIES)
    try:
        settings = build_grid(strategies, args.n, beam_width=args.beam_width,
                              mcts_simulations=args.mcts_simulations, mcts_children=args.mcts_children,
                              efforts=args.reasoning_effort, aggregation=args.aggregation, adaptive=args.adaptive,
                              modes=args.modes,
                              search_options={"max_steps": args.max_steps, "max_step_tokens": args.max_step_tokens,
                                              "seed": args.seed, "temperature": args.temperature})
    except ValueError as exc:
        raise SystemExit(f"openr eval: {exc}") from None
    return Sweep(dataset=args.dataset, limit=args.limit, seed=args.seed, settings=settings, base_url=args.base_url,
                 api_key=args.api_key, model=args.model, concurrency=args.concurrency, max_tokens=args.max_tokens,
                 out=Path(args.out), progress=not args.no_progress,
                 fit_auto=Path(args.fit_auto) if args.fit_auto else None,
                 grading=Grading(timeout_s=args.timeout_s or None, max_tokens_total=args.max_tokens_total,
                                 lenient=args.lenient))


def run(args: argparse.Namespace, command: list[str]) -> list[Summary]:
    """Evaluate what the flags describe; `command` (the command line) is kept in OUT/command.txt."""
    # Imported here, not at the top: the sweep pulls in the OpenAI SDK and math-verify (sympy),
    # which `openr serve` and `openr train` should not pay for at start-up.
    from openr.evaluation.sweep import run as run_sweep

    return run_sweep(sweep_from_args(args), command)

"""Turn results rows into the scaling-law report: a markdown table and a plot of
accuracy against mean generated tokens per problem, one line per strategy.

Tokens, not samples, go on the x-axis: that is what a budget costs, and it puts
strategies that spend samples differently (votes, beams, trees) on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openr.evaluation.settings import ADAPTIVE_SUFFIX, Setting, budget_label

TABLE_FILE = "table.md"
PLOT_FILE = "accuracy_vs_tokens.png"
# A log x-axis once the largest mean token count is this many times the smallest.
LOG_X_MIN_RATIO = 10.0
PLOT_SIZE_IN = (7.0, 4.5)
PLOT_DPI = 120
# One marker per strategy, so lines that share points stay distinguishable.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class Summary:
    """One setting's line of the table: over its N answered (or failed) problems."""

    setting: str
    strategy: str
    budget: int | str
    n: int
    errors: int
    accuracy: float
    mean_tokens: float  # generated per problem, search included
    mean_reasoning_tokens: float  # the part not in the answer
    mean_latency_s: float  # request sent to answer received: includes waiting in the server's queue
    final_answers: float = 1.0  # share of answers that state a final answer
    time_cuts: int = 0  # searches the time budget ended
    budget_cuts: int = 0  # searches another budget (tokens, PRM calls, context) ended
    ceiling: float | None = None  # share with a right finished candidate (pass@n); None: not recorded


def summarize(rows: list[dict[str, Any]], settings: list[Setting]) -> list[Summary]:
    """Per setting, in grid order; a request that failed counts as an incorrect answer."""
    summaries = []
    for setting in settings:
        mine = [row for row in rows if row["setting"] == setting.name]
        count = max(len(mine), 1)  # an empty setting reports zeros rather than dividing by zero
        summaries.append(Summary(
            setting=setting.name, strategy=setting.strategy, budget=setting.budget, n=len(mine),
            errors=sum(row["error"] is not None for row in mine),
            accuracy=sum(bool(row["correct"]) for row in mine) / count,
            mean_tokens=sum(row["completion_tokens"] for row in mine) / count,
            mean_reasoning_tokens=sum(row["reasoning_tokens"] for row in mine) / count,
            mean_latency_s=sum(row["latency_s"] for row in mine) / count,
            # rows written before these were recorded count as stating an answer and uncut
            final_answers=sum(bool(row.get("final_answer", True)) for row in mine) / count,
            time_cuts=sum(row.get("stop_reason") == "time" for row in mine),
            budget_cuts=sum(row.get("stop_reason") in ("tokens", "prm_calls", "context") for row in mine),
            ceiling=_ceiling(mine)))
    return summaries


def _ceiling(rows: list[dict[str, Any]]) -> float | None:
    """pass@n over the rows, a failed request counting as no right candidate; None when an
    answered row did not record it (a run from before it was, or a reply without candidates)."""
    if not rows or any(row.get("ceiling") is None and row["error"] is None for row in rows):
        return None
    return sum(bool(row["ceiling"]) for row in rows) / len(rows)


def format_table(summaries: list[Summary]) -> str:
    header = ("| setting | strategy | budget | accuracy | pass@n (ceiling) | mean tokens | mean reasoning tokens "
              "| mean latency (s) | N | errors | final answer stated | cut by time | cut by tokens/PRM/context |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for s in summaries:
        mark = " ⚠ time cuts" if s.time_cuts else ""  # the machine, not only the search, shaped this row
        ceiling = "—" if s.ceiling is None else f"{s.ceiling:.1%}"
        lines.append(f"| {s.setting}{mark} | {s.strategy} | {s.budget} | {s.accuracy:.1%} | {ceiling} "
                     f"| {s.mean_tokens:.1f} "
                     f"| {s.mean_reasoning_tokens:.1f} | {s.mean_latency_s:.2f} | {s.n} | {s.errors} "
                     f"| {s.final_answers:.0%} | {s.time_cuts} | {s.budget_cuts} |")
    return "\n".join(lines) + "\n"


def write_table(summaries: list[Summary], path: Path) -> str:
    table = format_table(summaries)
    path.write_text(table, encoding="utf-8")
    return table


def write_plot(summaries: list[Summary], path: Path, title: str) -> None:
    """Accuracy against mean tokens per problem; each point labelled with its budget."""
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PLOT_SIZE_IN)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [s for s in summaries if s.n]
    for index, name in enumerate(dict.fromkeys(_line_of(s) for s in points)):
        line = [s for s in points if _line_of(s) == name]
        [drawn] = ax.plot([s.mean_tokens for s in line], [s.accuracy for s in line], label=name,
                          marker=MARKERS[index % len(MARKERS)])
        # Strategies at the same budget land at the same x: alternate the label's
        # side and colour it as its line, so overlapping points stay readable.
        side = 1 if index % 2 == 0 else -1
        for s in line:
            label = budget_label(s.strategy, s.budget) + (f" ({s.time_cuts} cut by time)" if s.time_cuts else "")
            ax.annotate(label, (s.mean_tokens, s.accuracy), color=drawn.get_color(),
                        textcoords="offset points", xytext=(5 * side, 4), fontsize=8,
                        ha="left" if side > 0 else "right")
    _scale_x(ax, [s.mean_tokens for s in points if s.mean_tokens > 0])
    ax.set_xlabel("mean generated tokens per problem (search included)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)


def _line_of(summary: Summary) -> str:
    """The plot line a setting belongs to: its strategy, adaptive stopping drawn apart."""
    adaptive = summary.setting.endswith(ADAPTIVE_SUFFIX)
    return f"{summary.strategy} ({ADAPTIVE_SUFFIX[1:]})" if adaptive else summary.strategy


def _scale_x(ax, tokens: list[float]) -> None:
    """Log scale over a wide range, ticked at 1-2-5 steps in plain numbers rather than powers of ten."""
    if not tokens or max(tokens) / min(tokens) < LOG_X_MIN_RATIO:
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())

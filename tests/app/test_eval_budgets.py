"""`openr eval` against a slow server: a search its time budget cut is reported
as cut, and graded wrong even where a lenient reading of its text would pass."""

from __future__ import annotations

import pytest

from openr.evaluation.answers import Grading, Job, answer
from openr.evaluation.report import format_table, summarize
from openr.evaluation.settings import build_grid
from openr.tasks import Problem
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakePRM, StepFakeEngine

pytestmark = pytest.mark.anyio


class CountingSlowEngine(StepFakeEngine):
    """Slow, and writes its steps as "step 2", so a cut text still ends in a number."""

    STEPS = ["step 1", "step 2", "The answer is \\boxed{{{answer}}}"]


async def test_a_search_cut_by_time_is_reported_as_cut_and_not_counted():
    [setting] = build_grid(["beam_search"], [2], beam_width=1, mcts_simulations=[1])
    problem = Problem(id="p0", question="What is 1 + 1?", answer="2", solution="", source="test", level=None)
    async with serving(CountingSlowEngine(delay_s=0.1), prm_factory=FakePRM) as (_, sdk, _):
        cut = await answer(sdk, MODEL, Job(problem, setting), None, Grading(timeout_s=0.8))
        lenient = await answer(sdk, MODEL, Job(problem, setting), None, Grading(timeout_s=0.8, lenient=True))
        whole = await answer(sdk, MODEL, Job(problem, setting), None, Grading(timeout_s=60.0))
    # the search answers from its last finished round: steps, no final answer
    assert cut["error"] is None and cut["stop_reason"] == "time" and cut["finish_reason"] == "length"
    assert cut["answer"].startswith("step 1") and not cut["final_answer"] and not cut["correct"]
    assert lenient["stop_reason"] == "time" and lenient["extracted"] in ("1", "2")  # a stray number, read leniently
    assert whole["stop_reason"] is None and whole["final_answer"]
    [summary] = summarize([cut], [setting])
    assert summary.time_cuts == 1 and summary.accuracy == 0.0
    assert "⚠ time cuts" in format_table([summary])

"""`openr eval`: the settings grid, the report, resuming and failed requests
(the sweep against a real server is in tests/e2e/test_e2e_eval_sweep.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from tqdm.auto import tqdm

from openr.cli import build_parser
from openr.evaluation import commands
from openr.evaluation.answers import Job, pending_jobs, read_rows, record_run, run_jobs
from openr.evaluation.report import format_table, summarize, write_plot
from openr.evaluation.settings import Setting, build_grid, needs_prm
from openr.evaluation.sweep import Sweep, _choose_model
from openr.tasks import Problem
from tests.support.e2e_helpers import PNG_SIGNATURE

PROBLEMS = [Problem(id=f"p{i}", question=f"Compute {i} + 1.", answer=str(i + 1), solution=None, source="test",
                    level=None) for i in range(3)]


def _grid(**overrides) -> list[Setting]:
    options = {"beam_width": 4, "mcts_simulations": [4], "search_options": {"max_steps": 3, "seed": 0}}
    return build_grid(overrides.pop("strategies", ["cot", "majority_vote"]), overrides.pop("budgets", [1, 4]),
                      **{**options, **overrides})


def test_grid_names_each_setting_and_builds_its_request():
    settings = build_grid(["cot", "majority_vote", "beam_search", "mcts", "cot"], [16, 1, 4], beam_width=4,
                          mcts_simulations=[8, 4], mcts_children=2, efforts=["high", "low"],
                          aggregation="prm_min_vote", search_options={"max_steps": 3, "max_step_tokens": None,
                                                                      "seed": 7})
    assert [s.name for s in settings] == [
        "cot", "majority_vote-n1", "majority_vote-n4", "majority_vote-n16", "beam_search-n1-bw1",
        "beam_search-n4-bw4", "beam_search-n16-bw4", "mcts-sims4", "mcts-sims8", "effort-low", "effort-high"]
    by_name = {s.name: s for s in settings}
    common = {"max_steps": 3, "seed": 7}  # unset options are left to the server
    assert by_name["cot"].request == {"search": {"strategy": "cot", **common}}
    assert by_name["majority_vote-n4"].request == {"search": {"strategy": "majority_vote", "n": 4, **common}}
    assert by_name["beam_search-n16-bw4"].request == {"search": {
        "strategy": "beam_search", "n": 16, "beam_width": 4, "aggregation": "prm_min_vote", **common}}
    assert by_name["mcts-sims8"].request["search"] == {
        "strategy": "mcts", "num_simulations": 8, "n_children": 2, "aggregation": "prm_min_vote", **common}
    assert by_name["effort-low"].request == {"reasoning_effort": "low", "search": common}
    assert (by_name["mcts-sims8"].budget, by_name["effort-high"].budget, by_name["cot"].budget) == (8, "high", 1)
    assert json.loads(json.dumps([s.to_json() for s in settings]))[1]["request"]["search"]["n"] == 1


def test_a_sampling_temperature_reaches_every_strategy_but_greedy_cot():
    settings = build_grid(["cot", "best_of_n", "beam_search"], [4], beam_width=4, mcts_simulations=[4],
                          search_options={"temperature": 1.2, "seed": 0})
    temperatures = {s.name: s.request["search"].get("temperature") for s in settings}
    assert temperatures == {"cot": None, "best_of_n-n4": 1.2, "beam_search-n4-bw4": 1.2}
    args = build_parser().parse_args(["eval", "--out", "x", "--temperature", "0.6"])
    assert args.temperature == 0.6


def test_grid_rejects_what_the_server_would():
    with pytest.raises(ValueError, match=r"multiple of beam_width \(4\)"):
        build_grid(["beam_search"], [6], beam_width=4, mcts_simulations=[4])
    with pytest.raises(ValueError, match="unknown strategy"):
        build_grid(["greedy"], [1], beam_width=4, mcts_simulations=[4])


def test_prm_strategies_need_a_prm_unless_they_vote():
    voting = build_grid(["best_of_n"], [4], beam_width=4, mcts_simulations=[4], aggregation="majority_vote")
    assert [needs_prm(s) for s in _grid(strategies=["cot", "majority_vote", "best_of_n"], budgets=[4])] == [
        False, False, True]
    assert not needs_prm(voting[0])


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts"])
def test_tree_searches_need_a_prm_even_when_they_vote(strategy):
    """As the server decides it: they prune by PRM scores whatever picks the final answer."""
    [setting, *_] = build_grid([strategy], [4], beam_width=2, mcts_simulations=[4], aggregation="majority_vote")
    assert setting.request["search"]["aggregation"] == "majority_vote" and needs_prm(setting)


def test_cli_registers_eval_and_reasoning_effort_replaces_default_strategies(tmp_path):
    args = build_parser().parse_args(["eval", "--reasoning-effort", "low", "--out", str(tmp_path)])
    assert callable(args.func)
    assert [s.name for s in commands.sweep_from_args(args).settings] == ["effort-low"]
    args = build_parser().parse_args(["eval", "--out", str(tmp_path)])
    assert [s.strategy for s in commands.sweep_from_args(args).settings][:2] == ["cot", "majority_vote"]


def _row(problem: str, setting: str, correct: bool, tokens: int, error: str | None = None,
         stop_reason: str | None = None, final_answer: bool = True) -> dict:
    return {"problem_id": problem, "setting": setting, "strategy": setting.split("-")[0], "budget": 1,
            "answer": "", "extracted": None, "gold": "1", "correct": correct, "completion_tokens": tokens,
            "reasoning_tokens": tokens // 2, "latency_s": 0.5, "error": error, "stop_reason": stop_reason,
            "final_answer": final_answer}


def test_table_and_plot_from_rows(tmp_path):
    settings = _grid(budgets=[1, 64])
    rows = [_row("p0", "cot", True, 10), _row("p1", "cot", False, 30),
            _row("p0", "majority_vote-n64", True, 2000), _row("p1", "majority_vote-n64", False, 0, error="HTTP 500")]
    summaries = summarize(rows, settings)
    assert [(s.setting, s.n, s.errors, s.accuracy, s.mean_tokens) for s in summaries] == [
        ("cot", 2, 0, 0.5, 20.0), ("majority_vote-n1", 0, 0, 0.0, 0.0), ("majority_vote-n64", 2, 1, 0.5, 1000.0)]
    table = format_table(summaries).splitlines()
    assert table[0].startswith("| setting | strategy | budget | accuracy | pass@n (ceiling) | mean tokens")
    assert table[2] == "| cot | cot | 1 | 50.0% | — | 20.0 | 10.0 | 0.50 | 2 | 0 | 100% | 0 | 0 |"
    write_plot(summaries, tmp_path / "plot.png", title="synthetic")  # tokens span 100x: log x-axis
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_ceiling_is_any_finished_candidate_right_and_a_failed_request_counts_as_none():
    from openr.evaluation.answers import ceiling

    right, wrong = ["3 + 4 = 7", "\\boxed{7}"], ["3 + 4 = 8", "\\boxed{8}"]
    trace = {"candidates": [{"steps": wrong, "finished": True}, {"steps": right, "finished": False}]}
    assert ceiling(trace, "7", lenient=False) is False  # the right one never finished
    trace["candidates"][1]["finished"] = True
    assert ceiling(trace, "7", lenient=False) is True and ceiling({}, "7", lenient=False) is None
    settings = _grid(strategies=["best_of_n"], budgets=[4])
    rows = [{**_row(p, "best_of_n-n4", False, 10), "ceiling": c} for p, c in (("p0", True), ("p1", False))]
    failed = _row("p2", "best_of_n-n4", False, 0, error="HTTP 500")
    assert summarize(rows + [{**failed, "ceiling": None}], settings)[0].ceiling == pytest.approx(1 / 3)
    assert summarize(rows + [_row("p2", "best_of_n-n4", False, 10)], settings)[0].ceiling is None  # not recorded
    assert "| 50.0% |" in format_table(summarize(rows, settings)).splitlines()[2]


def test_resume_skips_answered_pairs_and_asks_failed_and_time_cut_ones_again(tmp_path):
    settings = _grid(budgets=[4])
    results = tmp_path / "results.jsonl"
    lines = [_row("p0", "cot", True, 5), _row("p0", "majority_vote-n4", False, 0, error="HTTP 503"),
             _row("p1", "cot", False, 5, error="HTTP 503"), _row("p1", "cot", True, 5),  # retried: last row wins
             _row("p1", "majority_vote-n4", False, 90, stop_reason="time"),  # the machine's load cut it
             _row("p2", "majority_vote-n4", False, 90, stop_reason="tokens")]  # the search's own budget did
    results.write_text("".join(json.dumps(row) + "\n" for row in lines) + '{"problem_id": "p2", "sett')
    pending = pending_jobs(PROBLEMS, settings, read_rows(results))
    assert [(job.problem.id, job.setting.name) for job in pending] == [
        ("p0", "majority_vote-n4"), ("p1", "majority_vote-n4"), ("p2", "cot")]


def test_run_refuses_a_changed_setting_under_the_same_name(tmp_path):
    record_run(tmp_path, "m", "arith", _grid(budgets=[4]))
    record_run(tmp_path, "m", "arith", _grid(budgets=[4, 8]))  # a new budget extends the run
    with pytest.raises(ValueError, match="setting cot as"):
        record_run(tmp_path, "m", "arith", _grid(budgets=[4], search_options={"max_steps": 9}))
    with pytest.raises(ValueError, match="model"):
        record_run(tmp_path, "other", "arith", _grid(budgets=[4]))


def _fake_server(request: httpx.Request) -> httpx.Response:
    """Models: one without a PRM. Chat: HTTP 500 for majority_vote, a right answer with usage otherwise."""
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [
            {"id": "m", "object": "model", "created": 0, "owned_by": "test"}]})
    body = json.loads(request.content)
    if body["search"]["strategy"] == "majority_vote":
        return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error", "param": None,
                                                   "code": None}})
    answer = f"The answer is \\boxed{{{int(body['messages'][0]['content'].split()[1]) + 1}}}"
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45,
                  "completion_tokens_details": {"reasoning_tokens": 30}}})


def _fake_client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://fake/v1", api_key="k", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.MockTransport(_fake_server)))


def test_failed_requests_become_incorrect_rows_not_crashes(tmp_path):
    jobs = [Job(problem, setting) for problem in PROBLEMS[:2] for setting in _grid(budgets=[4])]
    results = tmp_path / "results.jsonl"
    with tqdm(disable=True) as bar:
        asyncio.run(run_jobs(_fake_client(), "m", jobs, results, concurrency=3, max_tokens=100, bar=bar))
    rows = read_rows(results)
    assert len(rows) == 4
    good, failed = rows[("p1", "cot")], rows[("p1", "majority_vote-n4")]
    assert (good["correct"], good["extracted"], good["completion_tokens"], good["reasoning_tokens"]) == (
        True, "2", 40, 30)
    assert failed["error"].startswith("HTTP 500") and failed["correct"] is False


def test_prm_strategies_on_a_model_without_prm_stop_before_any_request(tmp_path):
    sweep = Sweep(dataset="arith", limit=1, seed=0, settings=_grid(strategies=["best_of_n"]), base_url="http://fake/v1",
                  api_key="k", model=None, concurrency=1, max_tokens=None, out=tmp_path, progress=False)
    with pytest.raises(SystemExit, match="has no PRM attached, and best_of_n-n1, best_of_n-n4 need one"):
        asyncio.run(_choose_model(_fake_client(), sweep))


def test_grid_runs_auto_at_each_effort_and_adaptive_voting_under_its_own_name():
    settings = build_grid(["majority_vote", "best_of_n", "particle_filtering", "auto"], [4], beam_width=4,
                          mcts_simulations=[4], adaptive=True, search_options={"seed": 0})
    by_name = {s.name: s for s in settings}
    assert list(by_name) == ["majority_vote-n4-adaptive", "best_of_n-n4-adaptive", "particle_filtering-n4",
                             "auto-low", "auto-medium", "auto-high"]
    assert by_name["best_of_n-n4-adaptive"].request["search"] == {"strategy": "best_of_n", "n": 4, "adaptive": True,
                                                                  "seed": 0}
    assert by_name["particle_filtering-n4"].request["search"] == {"strategy": "particle_filtering", "n": 4, "seed": 0}
    assert (by_name["auto-medium"].request["search"], by_name["auto-medium"].budget) == (
        {"strategy": "auto", "effort": "medium", "seed": 0}, "medium")
    assert [needs_prm(s) for s in settings] == [False, True, True, False, False, False]


def test_auto_table_is_fitted_per_budget_level_from_fixed_settings_only():
    from openr.evaluation.autofit import fit_auto_table
    from openr.evaluation.report import Summary
    from openr.search.auto import AutoTable

    settings = build_grid(["best_of_n", "beam_search", "auto"], [4, 8, 16], beam_width=4, mcts_simulations=[4],
                          search_options={"seed": 0, "max_steps": 8})

    def summary(name: str, accuracy: float, tokens: float) -> Summary:
        setting = next(s for s in settings if s.name == name)
        return Summary(name, setting.strategy, setting.budget, 200, 0, accuracy, tokens, 0.0, 1.0)

    summaries = [summary("best_of_n-n4", 0.35, 380), summary("best_of_n-n8", 0.45, 760),
                 summary("best_of_n-n16", 0.50, 1500), summary("beam_search-n4-bw4", 0.30, 380),
                 summary("beam_search-n8-bw4", 0.44, 750), summary("beam_search-n16-bw4", 0.58, 2010),
                 summary("auto-high", 0.99, 10)]  # auto's own rows never fit its table
    data = fit_auto_table(summaries, settings)  # levels of 500 (from 0), 1000, 2000 and 8000 tokens
    assert [(t["min_tokens"], t["strategy"], t["options"]) for t in data["tiers"]] == [
        (0, "best_of_n", {"n": 4}),
        (1000, "best_of_n", {"n": 8}),        # more accurate than beam search n=8, if dearer
        (2000, "best_of_n", {"n": 16}),       # beam search n=16 would be best, but 2010 tokens exceed 2000
        (8000, "beam_search", {"n": 16, "beam_width": 4})]
    assert data["tiers"][2]["fitted"] == {"setting": "best_of_n-n16", "accuracy": 0.5, "mean_tokens": 1500,
                                          "problems": 200}
    table = AutoTable.from_json(data, "fitted")
    assert table.tier_for(1999).options == {"n": 8} and table.tier_for(7999).options == {"n": 16}
    # a level that affords nothing better than the one below adds no tier
    cheap = fit_auto_table(summaries[:3], settings)
    assert [t["min_tokens"] for t in cheap["tiers"]] == [0, 1000, 2000]


def test_fit_auto_is_refused_on_the_test_split(tmp_path):
    args = build_parser().parse_args(["eval", "--dataset", "arith", "--fit-auto", str(tmp_path / "auto.json"),
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="never the test split"):
        commands.sweep_from_args(args)
    args = build_parser().parse_args(["eval", "--dataset", "arith-val", "--fit-auto", str(tmp_path / "auto.json"),
                                      "--out", str(tmp_path)])
    assert commands.sweep_from_args(args).fit_auto == tmp_path / "auto.json"


def test_the_report_keeps_settings_an_earlier_command_added(tmp_path, monkeypatch):
    from openr.evaluation import sweep as sweep_module

    record_run(tmp_path, "m", "arith", _grid(strategies=["cot"]))
    (tmp_path / "results.jsonl").write_text(json.dumps(_row("p0", "cot", True, 5)) + "\n")
    later = _grid(strategies=["majority_vote"], budgets=[4])

    async def nothing_missing(sweep, problems):
        record_run(sweep.out, "m", "arith", sweep.settings)
        return "m"

    monkeypatch.setattr(sweep_module, "_ask_missing", nothing_missing)
    monkeypatch.setattr(sweep_module, "select_problems", lambda dataset, limit, seed: PROBLEMS[:1])
    summaries = sweep_module.run(Sweep(dataset="arith", limit=1, seed=0, settings=later, base_url="http://fake/v1",
                                       api_key="k", model=None, concurrency=1, max_tokens=None, out=tmp_path,
                                       progress=False), ["openr", "eval"])
    assert [(s.setting, s.n) for s in summaries] == [("cot", 1), ("majority_vote-n4", 0)]
    assert "| cot | cot |" in (tmp_path / "table.md").read_text()


def test_rows_cut_by_a_budget_are_counted_and_time_cuts_marked():
    settings = _grid(strategies=["cot", "majority_vote"], budgets=[4])
    rows = [_row("p0", "cot", True, 10), _row("p1", "cot", False, 10, final_answer=False),
            _row("p0", "majority_vote-n4", False, 90, stop_reason="time", final_answer=False),
            _row("p1", "majority_vote-n4", True, 90, stop_reason="tokens")]
    cot, vote = summarize(rows, settings)
    assert (cot.final_answers, cot.time_cuts, cot.budget_cuts) == (0.5, 0, 0)
    assert (vote.final_answers, vote.time_cuts, vote.budget_cuts) == (0.5, 1, 1)
    table = format_table([cot, vote]).splitlines()
    assert table[2].startswith("| cot | ") and table[3].startswith("| majority_vote-n4 ⚠ time cuts | ")
    assert table[3].endswith("| 50% | 1 | 1 |")


def test_strict_grading_needs_a_stated_final_answer():
    from openr.tasks.grading import is_correct

    cut_off = "12 + 5 = 17\n\n17 * 2 = 34"  # a search cut mid-way, its last number happening to be right
    assert is_correct(cut_off, "34") and not is_correct(cut_off, "34", lenient=False)
    assert is_correct("so \\boxed{34}", "34", lenient=False)
    assert is_correct("#### 34", "34", lenient=False) and is_correct("The answer is 34.", "34", lenient=False)


def test_budgets_and_trace_ride_on_search_requests_and_the_run_records_them(tmp_path):
    from openr.evaluation.answers import Grading, record_run

    grading = Grading(timeout_s=600.0, max_tokens_total=5000)
    [cot, vote] = _grid(strategies=["cot", "majority_vote"], budgets=[4])
    sent = grading.search_request(vote.request)
    assert sent["search"] == {**vote.request["search"], "timeout_s": 600.0, "max_tokens_total": 5000,
                              "return_trace": True}
    assert vote.request["search"].get("timeout_s") is None  # the setting itself is unchanged
    assert grading.search_request({"reasoning_effort": "low"})["search"]["timeout_s"] == 600.0
    assert grading.search_request({}) == {}
    record_run(tmp_path, "m", "arith", [cot, vote], grading)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["budgets"] == {"timeout_s": 600.0, "max_tokens_total": 5000}
    assert run["grading"] == "final answer only"
    record_run(tmp_path, "m", "arith", [cot], grading)  # the same run resumes
    for other in (Grading(timeout_s=120.0, max_tokens_total=5000), Grading(600.0, 5000, lenient=True)):
        with pytest.raises(ValueError, match="must match"):
            record_run(tmp_path, "m", "arith", [cot], other)


def test_a_run_recorded_before_budgets_resumes_only_as_it_ran(tmp_path):
    from openr.evaluation.answers import Grading, record_run

    [cot] = _grid(strategies=["cot"], budgets=[1])
    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "dataset": "arith", "settings": {}}))
    with pytest.raises(ValueError, match="lenient"):
        record_run(tmp_path, "m", "arith", [cot], Grading(timeout_s=600.0))
    record_run(tmp_path, "m", "arith", [cot], Grading(timeout_s=None, lenient=True))


def test_a_negative_time_budget_is_refused_before_any_request(tmp_path):
    args = build_parser().parse_args(["eval", "--timeout-s", "-5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--timeout-s must be >= 0"):
        commands.sweep_from_args(args)
    args = build_parser().parse_args(["eval", "--timeout-s", "0", "--out", str(tmp_path)])
    assert commands.sweep_from_args(args).grading.timeout_s is None  # 0: the server's default applies


def test_deepconf_runs_in_each_mode_asked_named_by_the_mode_unless_it_is_the_default():
    settings = _grid(strategies=["deepconf", "majority_vote"], budgets=[16], modes=["online", "offline"])
    assert [s.name for s in settings] == ["deepconf-n16", "deepconf-n16-offline", "majority_vote-n16"]
    assert settings[1].request["search"]["mode"] == "offline"
    assert "mode" not in settings[2].request["search"]  # majority_vote takes no mode
    assert [s.name for s in _grid(strategies=["deepconf"], budgets=[4])] == ["deepconf-n4"]

"""docs/training.md's measured arith path (issue 31) quotes its result files:
the labels made through URLs (`bench/results/published_prm_arith.json`, beside
the recipe's in-process labels in summary.json), the PRMs' quality on the same
held-out solutions, and the searches of `docs/eval/openr-arith-ms-prm/` beside
the shipped PRM's `docs/eval/openr-arith/`."""

from __future__ import annotations

from tests.unit.test_doc_numbers import BENCH_RESULTS, CARD, eval_table, pct, result, row, text

DOC = "docs/training.md"


def flush(doc: str) -> str:
    """The doc with its lines unindented: its tables sit inside list items."""
    return "\n".join(line.strip() for line in doc.splitlines())


def published() -> dict:
    return result(BENCH_RESULTS / "published_prm_arith.json")


def test_the_labels_through_urls_are_the_recipes_in_number_and_quoted_so():
    doc, labels = text(DOC), published()["labels"]
    recipe = result(CARD / "summary.json")["labels"]["math_shepherd"]
    labeller = labels["labeller"]
    for key in ("steps", "completions", "tokens"):
        assert labeller[key] == recipe[key]
    good = round(labels["good_steps"] * labels["steps"])
    assert good == result(CARD / "summary.json")["prm"]["positive_steps"]
    assert (f"{labels['records']} solutions, {labels['steps']:,} steps, {labeller['completions']:,} completions, "
            f"{labeller['tokens']:,} tokens") in " ".join(doc.split())
    assert f"same {good:,} steps" in " ".join(doc.split())
    assert f"({pct(labels['good_steps'])})" in doc
    assert f"{labeller['completions_per_second']:.1f} completions a second" in " ".join(doc.split())


def test_the_prm_quality_rows_are_the_result_files():
    doc, quality = flush(text(DOC)), published()["quality"]
    for start, name in (("| math-shepherd format", "trained"), ("| the shipped verifier", "shipped")):
        cells, figures = row(doc, start), quality[name]
        assert cells[1] == f"{figures['f1']:.3f}"
        assert cells[2] == pct(figures["error_accuracy"]).replace("100.0%", "100%")
        assert cells[3] == pct(figures["correct_accuracy"]).replace("100.0%", "100%")
        assert cells[4] == f"{figures['step_auroc']:.3f}"
    recipe = result(CARD / "summary.json")["step_tag_prm_quality"]
    assert f"scored {recipe['f1']:.2f} and {recipe['step_auroc']:.2f}" in " ".join(doc.split())


def test_the_search_rows_are_the_two_eval_folders():
    doc = flush(text(DOC))
    mine, shipped = eval_table("openr-arith-ms-prm"), eval_table("openr-arith")
    for start, setting in (("| beam_search n=16", "beam_search-n16-bw4"), ("| best_of_n n=16", "best_of_n-n16")):
        cells = row(doc, start)
        assert cells[1:] == [mine[setting]["accuracy"], shipped[setting]["accuracy"]]
    assert f"greedy {shipped['cot']['accuracy']}" in doc

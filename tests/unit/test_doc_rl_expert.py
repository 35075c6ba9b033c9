"""The card's search-as-the-expert figures (issue 26) are those of the result
files they name: the replication on 2,048 questions, and every figure derived
from its fine-tunes (their mean gain, the lowest, the per-level moves)."""

from __future__ import annotations

from statistics import fmean

from tests.unit.test_doc_numbers import BENCH_RESULTS, pct, result, row, text

CARD = "openr/models/openr-arith/README.md"


def flat(doc: str) -> str:
    return " ".join(doc.split())


def test_the_replication_table_and_its_summary_are_the_result_file():
    card, found = text(CARD), result(BENCH_RESULTS / "rl_search_expert_2048.json")
    expert, models = found["expert"], found["models"]
    assert expert["questions"] == 2048 and expert["failed"] == 0
    assert (f"answered **{expert['right']:,} right**, where greedy answers {expert['greedy_right']}, and "
            f"{expert['right_where_greedy_wrong']} of them") in flat(card)
    start = models["start"]["accuracy"]
    tuned = {key: model for key, model in models.items() if key != "start"}
    counts = {"search": f"all {expert['right']:,} right", "search_greedy_wrong":
              f"the {expert['right_where_greedy_wrong']:,}"}
    for arm in ("search", "search_greedy_wrong"):
        cells = row(card, f"| {arm} ({counts[arm]})")
        assert cells[1:] == [pct(tuned[f"{arm} lr=0.0001 steps={steps} seed={seed}"]["accuracy"])
                             for steps in (75, 150) for seed in (1, 2)], arm
    accuracies = [model["accuracy"] for model in tuned.values()]
    assert len(accuracies) == 8 and all(model["learning_rate"] == 1e-4 for model in tuned.values())
    assert f"The eight average {pct(fmean(accuracies))}, **+{100 * (fmean(accuracies) - start):.1f} points**" \
           in flat(card)
    assert f"the lowest is +{100 * (min(accuracies) - start):.1f}" in flat(card)
    spread = max(abs(tuned[f"{arm} lr=0.0001 steps={steps} seed=1"]["accuracy"]
                     - tuned[f"{arm} lr=0.0001 steps={steps} seed=2"]["accuracy"])
                 for arm in ("search", "search_greedy_wrong") for steps in (75, 150))
    assert f"(at most {100 * spread:.1f} points)" in flat(card)
    levels = tuned["search lr=0.0001 steps=150 seed=1"]["by_level"]
    moves = ", ".join(f"{100 * models['start']['by_level'][level]:.0f} → {100 * levels[level]:.0f}%"
                      for level in ("5", "7"))
    assert moves in flat(card)
    assert f"{100 * models['start']['by_level']['8']:.0f} → {100 * levels['8']:.0f}%" in flat(card)
    assert max(model["minutes"] for model in tuned.values()) <= 0.6


def test_round_two_and_the_test_split_are_the_result_files():
    card, readme = flat(text(CARD)), flat(text("README.md"))
    first = result(BENCH_RESULTS / "rl_search_expert_2048.json")["models"]
    second = result(BENCH_RESULTS / "rl_search_expert_round2.json")
    models, expert = second["models"], second["expert"]
    chosen_first = first["search lr=0.0001 steps=150 seed=1"]["accuracy"]
    assert models["start"]["accuracy"] == chosen_first  # the start is round 1's chosen policy, graded again
    assert second["start"].endswith("search-0.0001-150-1")
    assert f"**{expert['right']:,} right**; greedy on the new start answers {expert['greedy_right']}" in card
    assert f"{expert['minutes']:.1f} minutes at two threads" in card
    counts = {"search": f"all {expert['right']:,} right", "search_greedy_wrong":
              f"the {expert['right_where_greedy_wrong']:,}"}
    for arm in ("search", "search_greedy_wrong"):
        cells = row(text(CARD), f"| {arm} ({counts[arm]})")
        assert cells[1:] == [pct(models[f"{arm} lr=0.0001 steps=150 seed={seed}"]["accuracy"]) for seed in (1, 2)]
    chosen = models["search lr=0.0001 steps=150 seed=1"]["accuracy"]
    assert chosen == max(m["accuracy"] for key, m in models.items() if key != "start")
    chain = f"{pct(first['start']['accuracy'])} → {pct(chosen_first)} → {pct(chosen)}"
    assert f"**{chain}**" in card and chain in readme
    test = result(BENCH_RESULTS / "rl_search_expert_test.json")
    assert test["problems"] == 500 and test["chosen"]["policy"].endswith("se-r2/search-0.0001-150-1")
    start, picked = test["start"], test["chosen"]
    gain = 100 * (picked["accuracy"] - start["accuracy"])
    assert f"**{pct(start['accuracy'])} → {pct(picked['accuracy'])}, +{gain:.1f} points**" in card
    assert f"{pct(start['accuracy'])} → {pct(picked['accuracy'])}" in readme
    assert (f"{picked['right_only_chosen']} problems are right only after the two rounds and "
            f"{picked['right_only_start']} only before (sign test p = {picked['sign_test_p']:.0e}".replace("e-0", "e-")
            in card)
    before = ", ".join(f"{100 * start['by_level'][lv]:.0f}" for lv in "23456")
    after = ", ".join(f"{100 * picked['by_level'][lv]:.0f}" for lv in "23456")
    assert f"({before}% → {after}%)" in card
    assert all(abs(picked["by_level"][lv] - start["by_level"][lv]) < 1e-9 for lv in "78")
    assert sum(test["grades"]["chosen"]) == round(picked["accuracy"] * 500)
    assert 2 * 2048 * 16 == 65_536 and "65,536 sampled paths" in card
    sft = result(BENCH_RESULTS / "sft_control.json")
    assert f"reached {pct(sft['models']['more_sft']['accuracy'])} on arith-val in {sft['train']['minutes']:.1f} " \
           "minutes" in card


def test_round_twos_gain_over_its_start_is_quoted_as_its_range():
    models = result(BENCH_RESULTS / "rl_search_expert_round2.json")["models"]
    gains = [100 * (m["accuracy"] - models["start"]["accuracy"]) for key, m in models.items() if key != "start"]
    assert f"Round 2 adds {min(gains):.1f} to {max(gains):.1f} points on top of round 1's" in flat(text(CARD))

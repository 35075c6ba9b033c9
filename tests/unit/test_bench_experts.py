"""Bench helpers whose figures go into the docs and the note: the label
statistics of bench.published_prm (the share of steps labelled good) and the
labeller's summary it records, and the answers bench.rl_search_expert keeps,
which a later run with the same expert reuses and one with another expert or policy does not."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.published_prm import label_statistics, printed_summary
from bench.rl_search_expert import expert, stored
from bench.sft_control import START, label


def test_label_statistics_count_good_steps_and_wholly_good_solutions():
    records = [{"prompt": "a", "labels": [True, True, False]},
               {"prompt": "a", "labels": [1.0, 0.75]},
               {"prompt": "b", "labels": [0.25]}]
    assert label_statistics(records) == {"records": 3, "problems": 2, "steps": 6, "good_steps": 0.6667,
                                         "all_good_solutions": 0.3333}
    assert label_statistics([])["good_steps"] is None


def test_kept_answers_are_reused_only_for_the_same_expert(tmp_path):
    args = argparse.Namespace(strategy="beam_search", n=16, beam_width=4, seed=0)
    search = expert(args)
    assert search == {"strategy": "beam_search", "n": 16, "seed": 0, "beam_width": 4}
    assert expert(argparse.Namespace(strategy="best_of_n", n=16, beam_width=4, seed=0)) == {
        "strategy": "best_of_n", "n": 16, "seed": 0}
    path = tmp_path / "solutions.jsonl"
    shipped, later = label(START), "runs/round-1/policy"
    assert stored(path, search, shipped) == {} and stored(None, search, shipped) == {}
    other = {**search, "n": 64}
    path.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": "p1", "search": search, "answer": "x"}, {"id": "p2", "search": other, "answer": "y"},
        {"id": "p3", "search": search, "policy": later, "answer": "z"}]) + "\n")
    assert stored(path, search, shipped) == {"p1": "x"}
    assert stored(path, other, shipped) == {"p2": "y"}
    assert stored(path, search, later) == {"p3": "z"}


def test_the_labellers_summary_is_the_last_json_it_printed(tmp_path):
    log = tmp_path / "label.log"
    log.write_text('math_shepherd: 100%|##| 3/3\n{\n  "problems": 3\n}\nprogress {"x": 1}\n{\n  "problems": 3,\n'
                   '  "completions_per_second": 15.3\n}\n')
    assert printed_summary(log) == {"problems": 3, "completions_per_second": 15.3}
    for wrong in ("math_shepherd: 0%| | 0/3\n", '{"prompt": "q", "labels": [true]}\n{"prompt": "r", "labels": []}\n'):
        log.write_text(wrong)  # a run cut short, or the labels file itself
        with pytest.raises(ValueError, match="JSON summary"):
            printed_summary(log)

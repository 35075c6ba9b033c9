"""The contracts are cheap to import: an engine or a PRM backend that implements
them loads no search strategy and no grader (math-verify, sympy)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["math_verify", "sympy", "torch", "openr.search", "openr.search.strategies.beam_search",
         "openr.search.strategies.mcts", "openr.tasks.grading"]


def loaded_after(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ["openr.contracts", "openr.engine.base"])
def test_contracts_load_no_strategy_and_no_grader(module):
    assert not set(HEAVY) & loaded_after(module)


def test_search_loads_no_grader_and_no_torch():
    assert not {"math_verify", "sympy", "torch", "openr.tasks.grading"} & loaded_after("openr.search")

"""CI installs and tests as the README tells a user to: the README's install and
test commands are the lines `.ci/run` runs, in a fresh virtual environment; and
every third-party module the package imports is named in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def section_commands(heading: str) -> list[str]:
    """The lines of the first ```bash block under `## heading` in the README."""
    section = README.split(f"\n## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block under ## {heading}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readmes_install_and_test_commands():
    ci_lines = set(CI.splitlines())
    commands = section_commands("Install") + section_commands("Test")
    assert len(commands) >= 3
    assert [c for c in commands if c not in ci_lines] == []


def test_the_install_makes_a_fresh_venv_and_ci_starts_from_none():
    assert "python3 -m venv .venv" in section_commands("Install")[0]
    assert CI.index("rm -rf .venv") < CI.index("python3 -m venv .venv")


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def third_party_imports() -> dict[str, str]:
    """Top-level modules imported under openr/ that are neither the stdlib nor openr: module -> a file."""
    found = {}
    for path in (ROOT / "openr").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("openr", "__future__"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_named_in_pyproject():
    declared = declared_distributions()
    distributions = packages_distributions()
    imports = third_party_imports()
    assert {"torch", "scipy", "fastapi"} <= set(imports)  # the scan sees real imports
    undeclared = {module: where for module, where in imports.items()
                  if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & declared}
    assert undeclared == {}

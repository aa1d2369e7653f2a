"""CI runs the README's test command: the two must not drift apart."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**Run the test suite**"):]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert block is not None, "README: no bash block after **Run the test suite**"
    return block.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    readme = _readme_test_command()
    install, _, checks = readme.partition('-e ".[dev,hopper]" && ')
    assert checks, readme
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci_lines[-1] == checks
    assert '.venv/bin/python -m pip install -c constraints.txt -e ".[dev,hopper]"' in ci_lines


def test_the_command_checks_layers_and_duplicates_on_every_package() -> None:
    checks = _readme_test_command()
    assert ".venv/bin/lint-imports" in checks
    pylint = re.search(r"\.venv/bin/pylint ([\w ]+?) &&", checks)
    assert pylint is not None, checks
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert set(pylint.group(1).split()) == packages

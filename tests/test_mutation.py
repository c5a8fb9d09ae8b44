"""tests/mutation.py: each module's selection names tests that exist, so none drops out unseen."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation import MODULES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """The node id of every test some selection names, collected once (a missing one fails here)."""
    named = sorted({test for _, tests in MODULES.values() for test in tests})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *named],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_selection_names_its_module_and_tests_that_exist(name, collected):
    module, tests = MODULES[name]
    assert (REPO / module).is_file()
    assert tests and not any(t.startswith("-") for t in tests), "files or node ids, never -k or options"
    for test in tests:  # every file or node id given collects at least one test
        assert any(i == test or i.startswith((test + "::", test + "[")) for i in collected), test


def test_a_recheck_of_a_module_never_run_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.mutation", "--recheck", "--modules", "kaggle", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: no run of kaggle in {tmp_path} to recheck: run it first" in result.stderr

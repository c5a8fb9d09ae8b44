"""The Makefile's targets run as they stand: a missing default input is made first (corpus → shards → run)."""

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

from eval import leaderboard
from tests.processes import why_failed

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "epochs=1 channels=16 lstm_layers=1 lstm_hidden=16 classifier_hidden=32 max_frames=4000"


def test_make_eval_with_its_defaults_builds_everything_it_needs(tmp_path):
    """`make eval` on a fresh clone (a tiny corpus, so that it is quick): corpus, shards, training, evaluation."""
    demo = tmp_path / "demo"
    command = ["make", "--no-print-directory", "eval", f"DEMO={demo}", "TRAIN=12", "DEV=3", "TEST=4"]
    command += [f"ARGS={TINY_MODEL}", "BEAM=4", "WORKERS=2"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, why_failed(result.stdout + result.stderr)
    made_files = (
        "corpus/corpus.json",
        "shards/train/index.json",
        "run/checkpoints/latest.json",
        "run/tensorboard",
    )
    for made in made_files:
        assert (demo / made).exists(), made
    rows = list(csv.reader(io.StringIO((demo / "run" / "submission.csv").read_text(), newline="")))
    # Invariant: Kaggle's file, positional ids, one row per test utterance
    assert rows[0] == ["id", "predictions"] and [r[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    # the default solution of the demo corpus scored it, and `python -m eval score` agrees
    (row,) = leaderboard.read(str(demo / "run" / "leaderboard.csv"))
    score = [sys.executable, "-m", "eval", "score", str(demo / "run" / "submission.csv")]
    scored = subprocess.run(
        [*score, str(demo / "corpus" / "test_solution.csv")], cwd=REPO, capture_output=True, text=True
    )
    assert scored.returncode == 0, scored.stderr
    assert f"mean Levenshtein distance {float(row['distance']):.4f}" in scored.stdout
    # make lm from the same shards, then the same evaluation with it: a second row naming the LM
    made = subprocess.run(
        ["make", "--no-print-directory", "lm", f"DEMO={demo}", "ORDER=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, why_failed(made.stdout + made.stderr)
    lm_file = demo / "lm" / "phones-2.arpa"
    with_lm = subprocess.run(
        [*command, f"LM={lm_file}", "ALPHA=0.5", "BETA=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert with_lm.returncode == 0, why_failed(with_lm.stdout + with_lm.stderr)
    rows = leaderboard.read(str(demo / "run" / "leaderboard.csv"))
    assert [(r["lm"], r["alpha"], r["beta"]) for r in rows] == [("", "", ""), (str(lm_file), "0.5", "1.0")]
    page = (demo / "run" / "leaderboard.html").read_text()  # the board as a page, beside the CSV
    assert page.count("<tr") == 2 + 3  # ranked: header, the run's best test row; history: header, both rows


def _dry_run(*arguments: str, env: dict | None = None) -> str:
    """What `make -n` would run (recipes printed, nothing executed)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_training_and_evaluation_machines_need_no_debian_packages(tmp_path):
    """Only what synthesises speech installs festival/flite; train, eval, lm and shards of your own
    data run on a machine without apt-get."""
    for target in ("setup", "train", "eval", "lm"):
        assert "dpkg-query" not in _dry_run(target, f"DATA={tmp_path}", f"CHECKPOINT={tmp_path}"), target
    assert "dpkg-query" not in _dry_run("shards", f"SRC={tmp_path}/src", f"DST={tmp_path}/dst")
    for target in ("corpus", "demo", "test"):
        assert "dpkg-query" in _dry_run(target), target


def test_setup_installs_torch_from_its_own_index_in_a_pip_call_of_its_own(tmp_path):
    commands = _dry_run("setup", f"VENV={tmp_path}/venv", "TORCH_INDEX=https://example.invalid/whl/cu126")
    (torch_line,) = [line for line in commands.splitlines() if "torch==" in line and "pip install" in line]
    assert "--index-url https://example.invalid/whl/cu126" in torch_line
    (project_line,) = [line for line in commands.splitlines() if "-e '.[test,export]'" in line]
    assert "--index-url" not in project_line  # the project's dependencies come from the usual index


def test_setup_keeps_a_cuda_torch_the_base_python_already_has(tmp_path):
    """As on Colab: the base Python's CUDA torch is seen by the venv and nothing replaces it."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '2.13.0+cu126'\nfrom torch import version\n")
    (fake / "version.py").write_text("cuda = '12.6'\n")
    python = f"env PYTHONPATH={tmp_path / 'site'} {sys.executable}"
    commands = _dry_run("setup", f"VENV={tmp_path}/venv", f"PYTHON={python}")
    assert "--system-site-packages" in commands
    assert "torch==" not in commands
    assert "keep torch 2.13.0+cu126" in commands
    # without it, the venv is a plain one and TORCH is installed
    plain = _dry_run("setup", f"VENV={tmp_path}/venv")
    assert "--system-site-packages" not in plain and "torch==2.13.0" in plain


def test_make_test_checks_the_oldest_python_the_code_needs_against_requires_python(tmp_path):
    requires = re.search(r'requires-python = ">=([0-9.]+)"', (REPO / "pyproject.toml").read_text())[1]
    (check,) = [line for line in _dry_run("test").splitlines() if "vermin" in line]
    assert f"-t={requires}-" in check and "--violations" in check
    module = tmp_path / "probe.py"  # a 3.11-only name must turn the check red
    module.write_text("from typing import Self\n")
    result = subprocess.run(
        ["make", "--no-print-directory", "python-version", f"PYTHON_SOURCES={module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "typing.Self" in result.stdout


def test_setup_without_a_venv_module_says_what_to_install(tmp_path):
    python = tmp_path / "python-without-venv"  # as Debian's python3 without python3-venv answers
    python.write_text("#!/bin/sh\necho 'The virtual environment was not created successfully' >&2\nexit 1\n")
    python.chmod(0o755)
    result = subprocess.run(
        ["make", "--no-print-directory", "setup", f"PYTHON={python}", f"VENV={tmp_path}/venv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cannot create a virtual environment" in result.stderr and "python3-venv" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_make_shards_runs_on_local_workers_or_the_cluster_scheduler_names(tmp_path):
    where = [f"SRC={tmp_path}/src", f"DST={tmp_path}/dst"]
    assert "--workers 3 " in _dry_run("shards", *where, "WORKERS=3")
    assert "--scheduler tcp://10.0.0.5:8786 " in _dry_run("shards", *where, "SCHEDULER=tcp://10.0.0.5:8786")
    recipe = _dry_run("shards", *where, f"SCHEDULER={tmp_path}/scheduler.json")
    assert f"--scheduler-file {tmp_path}/scheduler.json " in recipe and "--workers" not in recipe

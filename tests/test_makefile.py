"""The Makefile's targets run as they stand: a missing default input is made first (corpus → shards → run)."""

import csv
import io
import subprocess
import sys
from pathlib import Path

from eval import leaderboard
from tests.conftest import why_failed

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
    made = subprocess.run(["make", "--no-print-directory", "lm", f"DEMO={demo}", "ORDER=2"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert made.returncode == 0, why_failed(made.stdout + made.stderr)
    lm_file = demo / "lm" / "phones-2.arpa"
    with_lm = subprocess.run([*command, f"LM={lm_file}", "ALPHA=0.5", "BETA=1"], cwd=REPO,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert with_lm.returncode == 0, why_failed(with_lm.stdout + with_lm.stderr)
    rows = leaderboard.read(str(demo / "run" / "leaderboard.csv"))
    assert [(r["lm"], r["alpha"], r["beta"]) for r in rows] == [("", "", ""), (str(lm_file), "0.5", "1.0")]
    page = (demo / "run" / "leaderboard.html").read_text()  # the board as a page, beside the CSV
    assert page.count("<tr") == 2 + 3  # ranked: header, the run's best test row; history: header, both rows

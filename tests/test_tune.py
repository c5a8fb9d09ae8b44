"""eval/tune.py: the LM weight and bonus grid, on one rank and on two."""

import csv
import json
import subprocess
import sys

from eval import lm
from tests.processes import REPO, accelerate_launch, started_ranks, why_failed


def test_tune_scores_the_grid_on_all_ranks_as_on_one(trained, tmp_path):
    data, model, _ = trained
    lm.build(data, 2, str(tmp_path / "phones.arpa"))
    arguments = [
        "tune",
        "--checkpoint",
        model,
        "--data",
        data,
        "--lm",
        str(tmp_path / "phones.arpa"),
        "--alpha",
        "0:0.5:0.5",
        "--beta",
        "0:2:1",
        "--beam",
        "8",
        "--num-workers",
        "0",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "eval", *arguments, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert one.returncode == 0, why_failed(one.stderr)
    two = accelerate_launch([str(REPO / "eval" / "__main__.py"), *arguments, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, why_failed(two.stderr)
    assert started_ranks(one.stderr) == [(0, 1)] and started_ranks(two.stderr) == [(0, 2), (1, 2)]
    table = list(csv.DictReader((tmp_path / "one" / "tune.csv").read_text().splitlines()))
    assert [(r["alpha"], r["beta"]) for r in table] == [
        (a, b) for a in ("0.0", "0.5") for b in ("0.0", "1.0", "2.0")
    ]
    # Invariant: the same figures whichever way the split was shared; the best is the table's minimum
    assert (tmp_path / "two" / "tune.csv").read_text() == (tmp_path / "one" / "tune.csv").read_text()
    best = json.loads(one.stdout.splitlines()[-1])["best"]
    assert float(best["distance"]) == min(float(r["distance"]) for r in table)
    assert (tmp_path / "one" / "tune.png").read_bytes()[:4] == b"\x89PNG"

"""The random HW3P2 data set: a user's command, and what the pipeline makes of it."""

import subprocess
import sys

import numpy as np

from shards.vocab import PHONEMES
from tests.processes import pipeline_command, why_failed


def test_the_command_writes_a_folder_the_pipeline_shards_whole(tmp_path):
    raw = tmp_path / "raw"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline.synthetic", "--dst", str(raw), "--train", "5", "--dev", "3"]
        + ["--test", "2", "--seed", "4", "--later-names"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in raw.iterdir()) == ["dev-clean", "test-clean", "train-clean-100"]
    transcript = np.load(next((raw / "dev-clean" / "transcript").glob("*.npy")))
    assert transcript[0] == "[SOS]" and transcript[-1] == "[EOS]"
    assert set(transcript[1:-1]) <= set(PHONEMES) | {"[SIL]"}
    sharded = subprocess.run(
        pipeline_command(raw, tmp_path / "shards", "--workers", "1"), capture_output=True, text=True
    )
    assert sharded.returncode == 0, why_failed(sharded.stderr)
    assert "train: kept 5, rejected 0" in sharded.stdout and "dev: kept 3, rejected 0" in sharded.stdout
    assert "test: kept 2, rejected 0" in sharded.stdout


def test_a_negative_count_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.synthetic", "--dst", str(tmp_path), "--dev", "-1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "counts must be ≥ 0" in result.stderr

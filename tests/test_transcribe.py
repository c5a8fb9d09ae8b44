"""eval/transcribe.py: a model's phonemes for files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from shards.kaggle import read_labels
from shards.vocab import PHONEME_MAP, PHONEMES
from tests.processes import evaluated, why_failed


def _transcribe(model: str, *arguments: str, check: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "eval", "transcribe", "--checkpoint", model, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=check)


def test_transcribe_gives_what_evaluation_gives_for_the_same_files(trained, tmp_path):
    data, model, _ = trained
    submission = tmp_path / "sub.csv"
    evaluation = evaluated(trained, "--split", "test", "--beam", "4", "--submission", str(submission))
    assert evaluation.returncode == 0, why_failed(evaluation.stderr)
    utterances = dict(row.split(",") for row in (tmp_path / "sub.ids.csv").read_text().splitlines()[1:])
    expected = {utterances[str(k)]: p for k, p in read_labels(str(submission)).items()}
    folder = Path(data).parent / "raw" / "test" / "mfcc"
    result = _transcribe(model, "--beam", "4", "--format", "jsonl", str(folder))
    assert result.returncode == 0, why_failed(result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["input"].removesuffix(".npy"): r["string"] for r in records} == expected and len(records) == 9
    for record in records:
        assert record["phonemes"].split() == [PHONEMES[PHONEME_MAP.index(c)] for c in record["string"]]
        assert len(record["frames"]) == len(record["string"]) and record["score"] > 0
        assert all(0 <= frame < 200 for frame in record["frames"])  # input frames (the fixture's are < 200)
    text = _transcribe(model, "--beam", "1", str(folder / "te00003.npy"), check=True)
    name, phonemes = text.stdout.rstrip("\n").split("\t")
    assert name == "te00003.npy" and set(phonemes.split()) <= set(PHONEMES[1:])


def test_transcribe_names_each_bad_input_and_transcribes_the_others(trained, tmp_path):
    data, model, _ = trained
    good = Path(data).parent / "raw" / "test" / "mfcc" / "te00000.npy"
    bad = {
        "missing.npy": None,
        "text.npy": b"not an array",
        "narrow.npy": np.zeros((50, 12), np.float32),
        "empty.npy": np.zeros((0, 13), np.float32),
        "nan.npy": np.full((50, 13), np.nan, np.float32),
    }
    for name, content in bad.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            np.save(tmp_path / name, content)
    result = _transcribe(model, "--beam", "1", str(good), *(str(tmp_path / n) for n in bad))
    assert result.returncode == 1
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["te00000.npy"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    reasons = {
        "missing.npy": "unreadable",
        "text.npy": "NUMPY",
        "narrow.npy": "12 coefficients per frame, the model takes 13",
        "empty.npy": "zero frames",
        "nan.npy": "non-finite",
    }
    assert len(errors) == len(bad)
    for name, reason in reasons.items():
        assert any(f"{tmp_path / name}: " in line and reason in line for line in errors), (name, errors)

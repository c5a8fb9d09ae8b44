"""The synthesised demo corpus: real festival/flite speech, labels as spoken, HW3P2 layout."""

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import Settings, build
from pipeline.corpus import voices
from pipeline.corpus.build import CorpusSettings, generate
from shards.vocab import PHONEME_MAP, parse_transcript, to_string
from tests.processes import kill_when
from tests.written import tree_bytes

TINY = dict(counts=(10, 3, 4), seed=5, workers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate(CorpusSettings(dst=str(root), **TINY))
    return root


def _labelled(corpus: Path):
    for split in ("train", "dev"):
        for transcript in sorted((corpus / split / "transcript").glob("*.npy")):
            yield transcript, np.load(corpus / split / "mfcc" / transcript.name), np.load(transcript)


def test_labels_are_hw3p2_phonemes_between_silences(corpus):
    for path, _, transcript in _labelled(corpus):
        assert transcript[0] == "<sos>" and transcript[-1] == "<eos>"
        labels = parse_transcript(transcript, str(path))  # raises on anything outside the 40 phonemes
        # Invariant: every utterance starts and ends with SIL, as HW3P2 transcripts do
        assert labels[0] == labels[-1] == 1 and 0 not in labels


def test_features_are_13_mfccs_at_about_99_frames_per_second(corpus):
    records = {p.stem: json.loads(p.read_text()) for p in corpus.glob(".work/records/*/*.json")}
    for path, features, transcript in _labelled(corpus):
        assert features.dtype == np.float32 and features.shape[1] == 13
        # Invariant: a plausible speaking rate for every utterance
        assert 5 <= len(features) / (len(transcript) - 2) <= 15, path
        assert abs(len(features) / records[path.stem]["seconds"] - 100) < 2


def test_counts_solution_and_order(corpus):
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["utterances"] == {"train": 10, "dev": 3, "test": 4}
    assert len(list((corpus / "train" / "mfcc").glob("*.npy"))) == 10
    order = (corpus / "test" / "test_order.csv").read_text().split()[1:]
    solution = list(csv.DictReader(io.StringIO((corpus / "test_solution.csv").read_text())))
    # Invariant: Kaggle's solution: row k has id k and the label of the k-th file of test_order.csv
    assert [row["id"] for row in solution] == [str(k) for k in range(len(order))]
    for row, name in zip(solution, order, strict=True):
        record = json.loads(
            (corpus / ".work" / "records" / "test" / name.replace(".npy", ".json")).read_text()
        )
        assert row["label"] == to_string(parse_transcript(record["phonemes"], name))
    assert sorted(order) == sorted(p.name for p in (corpus / "test" / "mfcc").glob("*.npy"))
    assert all(set(row["label"]) <= set(PHONEME_MAP[1:]) and row["label"][0] == "." for row in solution)
    assert not (corpus / "test" / "transcript").exists()
    assert summary["hours"] > 0 and summary["mean_frames_per_phoneme"] > 5


def test_same_seed_same_bytes_whatever_the_worker_count(corpus, tmp_path):
    generate(CorpusSettings(dst=str(tmp_path / "again"), **(TINY | {"workers": 1})))
    assert tree_bytes(tmp_path / "again") == tree_bytes(corpus)
    generate(CorpusSettings(dst=str(tmp_path / "other"), **(TINY | {"seed": 6})))
    assert (tmp_path / "other" / "test_solution.csv").read_bytes() != (
        corpus / "test_solution.csv"
    ).read_bytes()


def test_tiny_corpus_shards_without_rejects(corpus, tmp_path):
    summary = build(Settings(str(corpus), str(tmp_path / "shards"), max_reject_fraction=0.0))
    assert [(s.split, s.kept, s.rejected) for s in summary.splits] == [
        ("train", 10, 0),
        ("dev", 3, 0),
        ("test", 4, 0),
    ]


def test_a_synthesiser_warning_drops_that_sentence_and_the_run_goes_on(tmp_path):
    # ked_diphone lacks the hh-g diphone: "bahe go" makes festival warn that the audio will not match
    words = tmp_path / "words.txt"
    words.write_text("bahe go house cat sun table window river paper")
    summary = generate(
        CorpusSettings(
            dst=str(tmp_path / "c"),
            counts=(8, 0, 0),
            seed=1,
            voices=("festival/ked_diphone",),
            words=str(words),
        )
    )
    assert summary["failed_attempts_by_kind"].get("synthesiser warning", 0) >= 1
    assert summary["utterances"]["train"] + summary["dropped_slots"] == 8
    failures = [
        f
        for p in tmp_path.glob("c/.work/records/train/*.json")
        for f in json.loads(p.read_text())["failures"]
    ]
    assert any("UniSyn: using default diphone" in f["detail"] for f in failures)
    for transcript in (tmp_path / "c" / "train" / "transcript").glob("*.npy"):
        spoken = " ".join(np.load(transcript))
        assert "HH G" not in spoken  # no kept utterance contains the sequence festival could not say


def test_interrupted_run_finishes_with_the_same_bytes(corpus, tmp_path):
    dst = tmp_path / "resumed"
    command = [sys.executable, "-m", "pipeline.corpus", "--dst", str(dst), "--train", "10", "--dev", "3"]
    command += ["--test", "4", "--seed", "5", "--workers", "1"]
    kill_when(command, lambda: len(list(dst.glob(".work/records/*/*.json"))) >= 3)
    assert not (dst / "corpus.json").exists()
    resumed = subprocess.run(command, check=True, capture_output=True, text=True)
    assert tree_bytes(dst) == tree_bytes(corpus)
    assert "%|" not in resumed.stderr  # not a terminal: progress as log lines, no tqdm bar


def test_unknown_voice_is_a_clear_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "pipeline.corpus",
        "--dst",
        str(tmp_path / "c"),
        "--voices",
        "flite/nobody",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "flite/nobody: flite has no such voice" in result.stderr


@pytest.mark.parametrize("engine", ["festival", "flite"])
def test_a_hung_synthesiser_is_a_failed_attempt(engine, tmp_path, monkeypatch):
    """Fault injection: the synthesiser on PATH never finishes (a hang on odd input, simulated)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hang = bin_dir / engine
    hang.write_text("#!/bin/sh\necho '@@begin k0'\nexec sleep 600\n")
    hang.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(voices, "TIMEOUT_START_S", 1.0)
    monkeypatch.setattr(voices, "TIMEOUT_PER_UTTERANCE_S", 0.5)
    voice = voices.voice_by_name("festival/kal_diphone" if engine == "festival" else "flite/kal16")
    requests = [voices.Request(f"k{i}", "hello world", 1.0, 100.0) for i in range(2)]
    started = time.monotonic()
    results = voices.synthesise(voice, requests, tmp_path)
    # Invariant: the call returns within its bound, every request failed with kind "timeout"
    assert time.monotonic() - started < 10
    assert {key: (type(r).__name__, r.kind) for key, r in results.items()} == {
        f"k{i}": ("SynthesisFailed", "timeout") for i in range(2)
    }

"""eval/lm.py: phoneme n-gram LMs estimated with Kneser–Ney, from word lists or from the shards (the lm command)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from eval.arpa import END, START, WORDS, read_arpa
from eval.lm import estimate, label_sequences
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.vocab import PHONEMES
from tests.markov import markov_sentences


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_history_sums_to_one(order):
    model = estimate(markov_sentences(200, seed=order), order)
    seen = {gram[:-1] for gram in model.logprob if len(gram) > 1} | {
        g for g in model.logprob if len(g) < order
    }
    rng = np.random.default_rng(0)
    unseen = [tuple(PHONEMES[1 + i] for i in rng.integers(40, size=3)) for _ in range(30)]
    for history in [*seen, *unseen, (START,), ()]:
        if END in history or "<unk>" in history:
            continue
        total = sum(10 ** model.score(history, word) for word in WORDS)
        # Invariant: a proper distribution over the 40 phonemes and </s>, whatever the history
        assert total == pytest.approx(1.0, abs=1e-9), history


def test_kneser_ney_beats_the_uniform_and_learns_the_chain():
    train, dev = markov_sentences(400, seed=1), markov_sentences(100, seed=2)
    perplexities = [estimate(train, order).perplexity(dev) for order in (1, 2, 3)]
    assert perplexities[0] < len(WORDS)  # unigrams already beat the uniform
    assert perplexities[1] < 0.6 * perplexities[0]  # the chain is a bigram: context helps a lot


def test_the_lm_command_estimates_from_the_shards(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(40, 10, 4), frames=(60, 200), seed=8)
    build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=0.1))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval",
            "lm",
            "--data",
            str(tmp_path / "shards"),
            "--order",
            "3",
            "--out",
            str(tmp_path / "lm" / "phones.arpa"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["train_utterances"] == 40 and len(figures["ngrams"]) == 3
    model = read_arpa((tmp_path / "lm" / "phones.arpa").read_bytes(), "phones.arpa")
    assert model.order == 3 and model.logprob[(START,)] == -99.0
    # the figures are the written model's: its perplexity on the splits' own label sequences
    for split in ("train", "dev"):
        sentences = label_sequences(str(tmp_path / "shards"), split)
        assert len(sentences) == {"train": 40, "dev": 10}[split]
        assert figures[f"{split}_perplexity"] == pytest.approx(model.perplexity(sentences), rel=1e-3)

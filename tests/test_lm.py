"""Phoneme n-gram LMs: Kneser–Ney estimation, ARPA written and read (by us and by KenLM), the decoder's table."""

import json
import subprocess
import sys

import numpy as np
import pytest
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from eval.arpa import END, START, WORDS, ArpaError, arpa_bytes, read_arpa
from eval.lm import estimate, label_sequences
from eval.token_lm import DENSE_ENTRIES, TokenLM, dense_table
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.vocab import PHONEME_MAP, PHONEMES


def _markov_sentences(count: int, seed: int) -> list[list[str]]:
    """Phoneme sequences from a peaky random bigram chain: structure an LM can learn."""
    rng = np.random.default_rng(seed)
    transitions = np.random.default_rng(99).dirichlet(np.full(40, 0.3), size=40)
    sentences = []
    for _ in range(count):
        states = [int(rng.integers(40))]
        for _ in range(int(rng.integers(1, 40))):
            states.append(int(rng.choice(40, p=transitions[states[-1]])))
        sentences.append([PHONEMES[1 + s] for s in states])
    return sentences


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_history_sums_to_one(order):
    model = estimate(_markov_sentences(200, seed=order), order)
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
    train, dev = _markov_sentences(400, seed=1), _markov_sentences(100, seed=2)
    perplexities = [estimate(train, order).perplexity(dev) for order in (1, 2, 3)]
    assert perplexities[0] < len(WORDS)  # unigrams already beat the uniform
    assert perplexities[1] < 0.6 * perplexities[0]  # the chain is a bigram: context helps a lot


def test_kenlm_reads_our_arpa_and_scores_as_our_reader(tmp_path):
    model = estimate(_markov_sentences(300, seed=3), 3)
    path = tmp_path / "lm.arpa"
    path.write_bytes(arpa_bytes(model))
    read = read_arpa(path.read_bytes(), str(path))
    kenlm = KenLM(str(path), Dictionary(["<blank>", *PHONEMES[1:]]))
    for sentence in _markov_sentences(20, seed=4):
        state, history = kenlm.start(False), [START]
        for word in sentence:
            state, score = kenlm.score(state, PHONEMES.index(word))
            # Invariant: KenLM (an independent ARPA reader) and ours agree on every query
            assert score == pytest.approx(read.score(history, word), abs=1e-5)
            assert read.score(history, word) == pytest.approx(model.score(history, word), abs=1e-5)
            history.append(word)
        assert kenlm.finish(state)[1] == pytest.approx(read.score(history, END), abs=1e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 5, 6])
def test_the_decoders_table_is_the_models_backoff(order):
    """Dense (orders 1–3 here) or filled row by row (5, 6: over 41 classes too large to tabulate)."""
    model = estimate(_markov_sentences(200, seed=5), order)
    lm = TokenLM(model, PHONEME_MAP, 0, "lm.arpa")
    assert lm.dense == (41**order <= DENSE_ENTRIES)
    table = lm.table()
    rng = np.random.default_rng(1)
    for _ in range(100):
        history = [START] + [PHONEMES[1 + i] for i in rng.integers(40, size=int(rng.integers(0, 7)))]
        symbols = ([0] * (order - 1) + [PHONEMES.index(w) if w != START else 0 for w in history])[
            len(history) :
        ]
        context = sum(s * 41 ** (order - 2 - i) for i, s in enumerate(symbols))
        (row,) = table.row_indices(np.array([context]))
        for column, word in [(0, END), (7, PHONEMES[7])]:
            expected = model.score(history, word) * np.log(10)
            assert table.rows[row, column] == pytest.approx(expected, abs=1e-5)
    if order <= 3:
        assert np.array_equal(table.rows, dense_table(model, lm.words))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\\\data\\\\ section"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tAA\n\\end\\\n", "declares 2 1-grams, holds 1"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\nabc\tAA\n\\end\\\n", "line 5"),
    ],
)
def test_a_malformed_arpa_file_is_named(text, message):
    with pytest.raises(ArpaError, match=message):
        read_arpa(text.encode(), "lm.arpa")


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

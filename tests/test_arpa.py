"""eval/arpa.py: ARPA files written and read by us, read by KenLM the same, a malformed one named with its line."""

import pytest
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from eval.arpa import END, START, ArpaError, arpa_bytes, read_arpa
from eval.lm import estimate
from shards.vocab import PHONEMES
from tests.markov import markov_sentences


def test_kenlm_reads_our_arpa_and_scores_as_our_reader(tmp_path):
    model = estimate(markov_sentences(300, seed=3), 3)
    path = tmp_path / "lm.arpa"
    path.write_bytes(arpa_bytes(model))
    read = read_arpa(path.read_bytes(), str(path))
    kenlm = KenLM(str(path), Dictionary(["<blank>", *PHONEMES[1:]]))
    for sentence in markov_sentences(20, seed=4):
        state, history = kenlm.start(False), [START]
        for word in sentence:
            state, score = kenlm.score(state, PHONEMES.index(word))
            # Invariant: KenLM (an independent ARPA reader) and ours agree on every query
            assert score == pytest.approx(read.score(history, word), abs=1e-5)
            assert read.score(history, word) == pytest.approx(model.score(history, word), abs=1e-5)
            history.append(word)
        assert kenlm.finish(state)[1] == pytest.approx(read.score(history, END), abs=1e-5)


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

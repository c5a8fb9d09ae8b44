"""eval/token_lm.py: the decoder's table of an LM is the model's own backoff, dense or row by row."""

import numpy as np
import pytest

from eval.arpa import END, START
from eval.lm import estimate
from eval.token_lm import DENSE_ENTRIES, TokenLM, dense_table
from shards.vocab import PHONEME_MAP, PHONEMES
from tests.markov import markov_sentences


@pytest.mark.parametrize("order", [1, 2, 3, 5, 6])
def test_the_decoders_table_is_the_models_backoff(order):
    """Dense (orders 1–3 here) or filled row by row (5, 6: over 41 classes too large to tabulate)."""
    model = estimate(markov_sentences(200, seed=5), order)
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

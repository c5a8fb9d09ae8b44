"""eval/prefix_beam.py's LM table: contexts as base-C numbers, a sparse table's rows computed once each and kept as it grows.

The search itself is held against ctcdecode's cases and exhaustive search in test_decode.py."""

import numpy as np

from eval.prefix_beam import Table

CLASSES = 5


def test_the_start_context_is_order_minus_one_sentence_starts():
    assert Table.flat(CLASSES).start_context(blank=0) == 0  # a unigram table has one context
    table = Table(np.zeros((CLASSES**2, CLASSES), np.float32), CLASSES, order=3)
    assert table.start_context(blank=0) == 0
    assert table.start_context(blank=4) == 4 * CLASSES + 4
    assert table.dense and table.contexts == CLASSES**2


def test_a_dense_table_s_row_is_its_context():
    table = Table(np.zeros((CLASSES**2, CLASSES), np.float32), CLASSES, order=3)
    assert table.row_indices(np.array([0, 7, 24])).tolist() == [0, 7, 24]


def test_a_sparse_table_computes_each_row_once_from_the_context_s_symbols_oldest_first():
    asked = []

    def row_source(symbols: list[int]) -> np.ndarray:
        asked.append(symbols)
        return np.full(CLASSES, 100 * symbols[0] + 10 * symbols[1] + symbols[2], np.float32)

    table = Table(np.empty((2, CLASSES), np.float32), CLASSES, order=4, row_source=row_source)
    first = [1 * 25 + 2 * 5 + 3, 4 * 25 + 0 * 5 + 1]  # (1, 2, 3) and (4, 0, 1)
    rows = table.row_indices(np.array(first))
    assert not table.dense and asked == [[1, 2, 3], [4, 0, 1]]
    assert table.rows[rows, 0].tolist() == [123.0, 401.0]
    # many more than the table had room for: it grows, and the rows already there stay
    contexts = np.arange(CLASSES**3)
    rows = table.row_indices(contexts)
    assert len(asked) == CLASSES**3  # the two asked before were not asked again
    assert table.rows.shape[0] >= CLASSES**3
    expected = [100 * (c // 25) + 10 * (c // 5 % 5) + c % 5 for c in contexts]
    assert table.rows[rows, 0].tolist() == expected
    assert table.row_indices(np.array(first)).tolist() == rows[first].tolist()  # stable row numbers
    assert dict(table.row_of) == table.row_index  # what the compiled search reads is the same map

"""A token n-gram LM as the beam search asks it: one LM word per decoder label, any order.

A *token* LM has a word for each label the decoder emits (characters, phonemes): every label is
scored as it is added. Label ``i`` is the LM word spelled like it; with the HW3P2 labels
(``shards.vocab.PHONEME_MAP``) the LM may instead use the phoneme names (``SIL``, ``AA``, …), as
``python -m eval lm`` writes them. The blank stands for ``<s>`` in a context and ``</s>`` as a
prediction. A label the LM lacks scores as ``<unk>``, as KenLM does.

An LM with words that are not labels — English words over a character label list, as in
ctcdecode's own LM test, where ctcdecode spells words from a dictionary and scores them at the
space label — is refused when the decoder is built: it would otherwise be read as a token LM.

The LM is an ARPA file or a KenLM binary (``build_binary``'s output, which keeps its vocabulary at
the end; queried through flashlight's KenLM). The search reads an ``eval.prefix_beam.Table``: for an
ARPA file dense (every context's row, computed once) while C^(order−1) × C entries fit in
``DENSE_ENTRIES`` (orders ≤ 4 over the 41 HW3P2 classes); beyond that, and for a binary, each
context's row is computed the first time a beam prefix needs it.
"""

import atexit
import functools
import itertools
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
import numpy as np
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from eval.arpa import END, NO_PROBABILITY, START, UNKNOWN, NgramModel, read_arpa
from eval.prefix_beam import Table
from shards.errors import UserError
from shards.vocab import PHONEME_MAP, PHONEMES

DENSE_ENTRIES = 1 << 23  # 32 MiB of float32: 41 classes up to order 4, 7 characters up to order 8
LN10 = math.log(10)


class LMError(UserError, ValueError):
    """An LM this decoder cannot use with its labels; the message names the file and why."""


KENLM_MAGIC = b"mmap lm http://kheafield.com/code format version 5\n\0"
KENLM_INCOMPLETE = b"mmap lm http://kheafield.com/code incomplete"
# lm/binary_format.hh: the Sanity header (88 bytes), then FixedWidthParameters: order (a byte) and, 12
# bytes on, whether the file ends with the vocabulary's strings (from <unk>, NUL-terminated)
ORDER_AT, HAS_VOCABULARY_AT = 88, 100


@dataclass(frozen=True)
class KenLMBinary:
    path: str  # a local file: KenLM maps it
    order: int
    words: frozenset[str]


@functools.lru_cache(maxsize=4)  # a tuning grid builds one decoder per point
def read_model(url: str) -> "NgramModel | KenLMBinary":
    """The LM at any fsspec URL: an ARPA file's n-grams, or a KenLM binary's order and words."""
    with fsspec.open(url, "rb") as handle:
        data = handle.read()
    if data.startswith(KENLM_INCOMPLETE):
        raise LMError(f"{url}: an incomplete KenLM binary (its build_binary did not finish)")
    if not data.startswith(KENLM_MAGIC[:33]):
        return read_arpa(data, url)
    if not data.startswith(KENLM_MAGIC):
        raise LMError(f"{url}: a KenLM binary of another format version than 5")
    start = data.rfind(b"<unk>\0")
    if len(data) <= HAS_VOCABULARY_AT or not data[HAS_VOCABULARY_AT] or start < 0:
        raise LMError(
            f"{url}: a KenLM binary without its vocabulary's strings; rebuild it with build_binary's defaults"
        )
    words = frozenset(w.decode("utf-8") for w in data[start:].split(b"\0")[:-1])
    return KenLMBinary(_local_copy(url, data), data[ORDER_AT], words)


def _local_copy(url: str, data: bytes) -> str:
    """``url`` itself when local, else a temporary copy removed at exit (KenLM maps a file)."""
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in (None, "file"):
        return fsspec.core.strip_protocol(url)
    handle, path = tempfile.mkstemp(suffix=".binlm")
    with os.fdopen(handle, "wb") as copy:
        copy.write(data)
    atexit.register(os.remove, path)
    return path


class TokenLM:
    """``model`` over ``labels`` (blank at ``blank``): the table the search reads, and ctcdecode's queries."""

    def __init__(self, model: "NgramModel | KenLMBinary", labels: Sequence[str], blank: int, source: str):
        self.model, self.source = model, source
        self.words = label_words(model, list(labels), blank, source)  # the LM word of each label
        classes = len(self.words)
        self.kenlm = KenLM(model.path, Dictionary(self.words)) if isinstance(model, KenLMBinary) else None
        self.dense = self.kenlm is None and classes ** (model.order - 1) * classes <= DENSE_ENTRIES
        self._dense = Table(dense_table(model, self.words), classes, model.order) if self.dense else None
        self._sparse = threading.local()  # a sparse table grows as it is read: one per thread
        self._arpa_rows: dict[tuple[str, ...], np.ndarray] = {}  # log10 rows by history, shared
        self._explicit = _explicit_ngrams(model, self.words) if self.kenlm is None and not self.dense else {}

    def table(self) -> Table:
        """The table the search reads: the one dense table, or this thread's sparse one."""
        if self._dense is not None:
            return self._dense
        if not hasattr(self._sparse, "table"):
            rows = np.empty((0, len(self.words)), np.float32)
            self._sparse.table = Table(rows, len(self.words), self.model.order, self._row)
        return self._sparse.table

    @classmethod
    def read(cls, url: str, labels: Sequence[str], blank: int) -> "TokenLM":
        return cls(read_model(url), labels, blank, url)

    def _row(self, symbols: list[int]) -> list[float]:
        """ln p(label | context) for every label (``</s>`` in the blank's column)."""
        history = [self.words[s] if self.words[s] != END else START for s in symbols]
        if self.kenlm is None:
            return LN10 * self._arpa_row(tuple(history))
        state = self.kenlm.start(START not in history)  # False: from <s>, which pads a short history
        for symbol in symbols:
            if self.words[symbol] != END:
                state = self.kenlm.score(state, symbol)[0]
        return [
            LN10 * (self.kenlm.finish(state) if word == END else self.kenlm.score(state, i))[1]
            for i, word in enumerate(self.words)
        ]

    def _arpa_row(self, history: tuple[str, ...]) -> np.ndarray:
        """log10 p(word | history) for every label's word, by ARPA's backoff rule: the n-grams the
        history has, the rest from the shorter history plus its backoff weight (memoised)."""
        row = self._arpa_rows.get(history)
        if row is None:
            if history:
                row = self.model.backoff.get(history, 0.0) + self._arpa_row(history[1:])
            else:
                unknown = self.model.logprob.get((UNKNOWN,), NO_PROBABILITY)
                row = np.full(len(self.words), unknown)
            columns, values = self._explicit.get(history, ((), ()))
            row = row.copy()
            row[list(columns)] = values
            self._arpa_rows[history] = row
        return row

    @property
    def order(self) -> int:
        return self.model.order


def _explicit_ngrams(
    model: NgramModel, words: list[str]
) -> dict[tuple[str, ...], tuple[list[int], list[float]]]:
    """Per history, the columns and log10 probabilities of the n-grams the model holds for it."""
    column = {w: i for i, w in enumerate(words)}
    explicit: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
    for gram, value in model.logprob.items():
        if gram[-1] in column:
            columns, values = explicit.setdefault(gram[:-1], ([], []))
            columns.append(column[gram[-1]])
            values.append(value)
    return explicit


def vocabulary(model: "NgramModel | KenLMBinary") -> set[str]:
    """The LM's words, its markers left out."""
    if isinstance(model, KenLMBinary):
        return set(model.words) - {START, END, UNKNOWN}
    return {gram[0] for gram in model.logprob if len(gram) == 1} - {START, END, UNKNOWN}


def label_words(model: "NgramModel | KenLMBinary", labels: list[str], blank: int, source: str) -> list[str]:
    """The LM word of each label, ``</s>`` for the blank: the labels themselves, or for the
    HW3P2 labels the phoneme names; an LM with other words is refused, naming some."""
    words = vocabulary(model)
    spelled = [END if i == blank else label for i, label in enumerate(labels)]
    if words <= set(spelled):
        return spelled
    if labels == list(PHONEME_MAP) and blank == 0 and words <= set(PHONEMES[1:]):
        return [END, *PHONEMES[1:]]
    strangers = sorted(words - set(spelled))
    raise LMError(
        f"{source}: {len(strangers)} of its {len(words)} words are not labels of this decoder "
        f"(e.g. {', '.join(map(repr, strangers[:5]))}; labels {''.join(labels)!r}). Only token LMs "
        "are supported, one word per label; a word LM (ctcdecode scores its words at the space "
        "label, spelled from a dictionary) is not"
    )


def dense_table(model: NgramModel, words: list[str]) -> np.ndarray:
    """ln p(word | context) for every context of ``order − 1`` symbols, as the search reads it.

    Symbol ``i`` is the label ``i``'s word, ``</s>``'s symbol (the blank) ``<s>`` (a history
    shorter than the context is padded with ``<s>``, which backs off to the right order). Row
    ``Σ s_i C^(k-1-i)``; column ``i`` predicts ``words[i]``. Built order by order with ARPA's
    backoff rule, so it equals :meth:`NgramModel.score` (tested).
    """
    names = [START if w == END else w for w in words]  # symbol → word, for contexts
    size = len(words)
    unknown = model.logprob.get((UNKNOWN,), NO_PROBABILITY)
    table = np.array([model.logprob.get((w,), unknown) for w in words], dtype=np.float64)[None]
    column = {w: i for i, w in enumerate(words)}
    symbol = {w: i for i, w in enumerate(names)}
    for k in range(1, model.order):  # contexts of k symbols from those of k - 1
        contexts = itertools.product(range(size), repeat=k)
        backoff = np.array([model.backoff.get(tuple(names[s] for s in c), 0.0) for c in contexts])
        table = backoff[:, None] + np.tile(table, (size, 1))  # row c → row of c without its first symbol
        for gram, value in model.logprob.items():
            if len(gram) == k + 1 and gram[-1] in column and all(w in symbol for w in gram[:-1]):
                row = sum(symbol[w] * size ** (k - 1 - i) for i, w in enumerate(gram[:-1]))
                table[row, column[gram[-1]]] = value
    return (table * LN10).astype(np.float32)

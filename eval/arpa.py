"""Phoneme n-gram models and their file, ARPA (log10 probabilities and backoff weights), the format
KenLM and ctcdecode read: the model and its queries, the one writer (:func:`arpa_bytes`) and the one
reader (:func:`read_arpa`). Words are the phoneme names of ``shards.vocab.PHONEMES`` (``SIL``,
``AA``, …) and ``<s>``/``</s>``; eval/lm.py estimates models, eval/token_lm.py decodes with them.
"""

import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shards.errors import UserError
from shards.vocab import PHONEMES

START, END, UNKNOWN = "<s>", "</s>", "<unk>"
WORDS = (*PHONEMES[1:], END)  # what a model predicts: the 40 phonemes and the end of an utterance
NO_PROBABILITY = -99.0  # log10 of what is never predicted (<s>), as SRILM and KenLM write it


class ArpaError(UserError, ValueError):
    """An ARPA file this reader cannot use; the message names the file and the line."""


@dataclass
class NgramModel:
    """log10 probabilities and backoff weights by n-gram (a tuple of words)."""

    order: int
    logprob: dict[tuple[str, ...], float]
    backoff: dict[tuple[str, ...], float]

    def score(self, history: Sequence[str], word: str) -> float:
        """log10 p(word | history), backing off as ARPA prescribes."""
        context = tuple(history)[-(self.order - 1) :] if self.order > 1 else ()
        penalty = 0.0
        while True:
            found = self.logprob.get((*context, word))
            if found is not None:
                return penalty + found
            if not context:
                return penalty + self.logprob.get((UNKNOWN,), NO_PROBABILITY)
            penalty += self.backoff.get(context, 0.0)
            context = context[1:]

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """log10 p(words </s>) from <s>."""
        history = [START]
        total = 0.0
        for word in [*words, END]:
            total += self.score(history, word)
            history.append(word)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """Per predicted word, </s> included."""
        total, count = 0.0, 0
        for words in sentences:
            total += self.sentence_logprob(words)
            count += len(words) + 1
        return 10 ** (-total / max(count, 1))


def arpa_bytes(model: NgramModel) -> bytes:
    """The model as an ARPA file (log10 probabilities and backoff weights)."""
    by_order: dict[int, list[tuple[str, ...]]] = defaultdict(list)
    for gram in model.logprob:
        by_order[len(gram)].append(gram)
    out = io.StringIO()
    out.write("\\data\\\n")
    for n in range(1, model.order + 1):
        out.write(f"ngram {n}={len(by_order[n])}\n")
    for n in range(1, model.order + 1):
        out.write(f"\n\\{n}-grams:\n")
        for gram in sorted(by_order[n]):
            line = f"{model.logprob[gram]:.6f}\t{' '.join(gram)}"
            if gram in model.backoff and n < model.order:
                line += f"\t{model.backoff[gram]:.6f}"
            out.write(line + "\n")
    out.write("\n\\end\\\n")
    return out.getvalue().encode()


def read_arpa(data: bytes, source: str) -> NgramModel:
    """An ARPA file's n-grams; ``source`` names it in errors."""
    logprob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    declared: dict[int, int] = {}
    section = None
    for number, raw in enumerate(data.decode("utf-8", errors="strict").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            if line == "\\data\\":
                section = 0
            elif line == "\\end\\":
                break
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1 : -len("-grams:")])
            elif section == 0 and line.startswith("ngram "):
                n, count = line[len("ngram ") :].split("=")
                declared[int(n)] = int(count)
            elif section:
                fields = line.split()
                gram = tuple(fields[1 : 1 + section])
                if len(gram) != section or len(fields) > section + 2:
                    raise ValueError(f"expected {section} words, a log10 probability and maybe a backoff")
                logprob[gram] = float(fields[0])
                if len(fields) == section + 2:
                    backoff[gram] = float(fields[-1])
            else:
                raise ValueError("text outside the \\data\\ and n-gram sections")
        except ValueError as error:
            raise ArpaError(f"{source} line {number}: {error}: {raw[:80]!r}") from None
    if not declared:
        raise ArpaError(f"{source}: not an ARPA file (no \\data\\ section)")
    found = Counter(len(g) for g in logprob)
    for n, count in declared.items():
        if found.get(n, 0) != count:
            raise ArpaError(f"{source}: declares {count} {n}-grams, holds {found.get(n, 0)}")
    return NgramModel(max(declared), logprob, backoff)

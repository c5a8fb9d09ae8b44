"""Phoneme n-gram language models estimated from a dataset (interpolated modified Kneser–Ney).

``python -m eval lm --data URL --order N --out URL`` estimates a model from the training split's
label sequences, each wrapped in ``<s> … </s>``, and writes it as ARPA (eval/arpa.py: log10, the
format KenLM and ctcdecode read). Words are the phoneme names of ``shards.vocab.PHONEMES``.

Estimation follows Chen & Goodman's interpolated modified Kneser–Ney, as KenLM's ``lmplz`` does:
the highest order uses raw counts, lower orders continuation counts (how many distinct words
precede an n-gram; n-grams starting with ``<s>`` keep raw counts, nothing can precede them); each
order has three discounts D1, D2, D3+ from its count-of-counts; the unigrams interpolate with
the uniform distribution over the vocabulary. The ARPA file stores each seen n-gram's
interpolated probability and each context's backoff weight (its interpolation weight), so a
query backs off exactly as the interpolated model prescribes and every history's probabilities
sum to 1 (tested).
"""

import argparse
import dataclasses
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from eval.arpa import END, NO_PROBABILITY, START, UNKNOWN, NgramModel, arpa_bytes
from eval.options import Url, request_of
from shards.errors import UserError
from shards.reader import BatchStream
from shards.store import publish_at
from shards.vocab import PHONEMES


def estimate(
    sentences: Iterable[Sequence[str]], order: int, vocabulary: Sequence[str] = PHONEMES[1:]
) -> NgramModel:
    """Interpolated modified Kneser–Ney over ``sentences`` (sequences of words: by default the
    phoneme names; any ``vocabulary`` of tokens, e.g. characters, each predicted even if unseen)."""
    predicted = (*vocabulary, END)
    if order < 1:
        raise UserError(f"order must be at least 1, not {order}")
    top: Counter = Counter()  # every n-gram of the order, and the shorter ones an utterance starts with
    for words in sentences:
        padded = [START, *words, END]
        for i in range(1, len(padded)):
            top[tuple(padded[max(0, i - order + 1) : i + 1])] += 1
    counts = _adjusted_counts(top, order)
    logprob: dict[tuple[str, ...], float] = {(START,): NO_PROBABILITY, (UNKNOWN,): NO_PROBABILITY}
    backoff: dict[tuple[str, ...], float] = {}
    lower: dict[tuple[str, ...], float] = {}  # the previous order's interpolated probabilities
    for n in range(1, order + 1):
        grams = counts[n] if n > 1 else Counter({(w,): counts[1].get((w,), 0) for w in predicted})
        discounts = _discounts(counts[n])
        total: dict[tuple, int] = defaultdict(int)
        freed: dict[tuple, float] = defaultdict(float)  # discount mass per context
        for gram, count in grams.items():
            total[gram[:-1]] += count
            freed[gram[:-1]] += _discount(count, discounts)
        weight = {context: freed[context] / total[context] for context in total}
        probability = {}
        for gram, count in grams.items():
            context = gram[:-1]
            below = lower[gram[1:]] if n > 1 else 1 / len(predicted)  # order 0: uniform
            probability[gram] = (count - _discount(count, discounts)) / total[context] + weight[
                context
            ] * below
        logprob.update((gram, math.log10(p)) for gram, p in probability.items())
        backoff.update((c, math.log10(w) if w > 0 else NO_PROBABILITY) for c, w in weight.items() if c)
        lower = probability
    return NgramModel(order, logprob, backoff)


def _discount(count: int, discounts: tuple[float, float, float]) -> float:
    return discounts[min(count, 3) - 1] if count else 0.0


def _adjusted_counts(top: Counter, order: int) -> dict[int, Counter]:
    """Raw counts at the highest order; below it, continuation counts (how many distinct words
    precede an n-gram), except raw counts for n-grams that start with <s>."""
    counts = {order: Counter({g: c for g, c in top.items() if len(g) == order})}
    for n in range(order - 1, 0, -1):
        level: Counter = Counter()
        for extension in {g[-(n + 1) :] for g in top if len(g) > n}:  # distinct (n+1)-grams
            level[extension[1:]] += 1
        level.update({g: c for g, c in top.items() if len(g) == n and g[0] == START})
        counts[n] = level
    return counts


def _discounts(grams: Counter) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the count-of-counts (fallbacks where data is too thin)."""
    n = Counter(min(c, 4) for c in grams.values())
    n1, n2, n3, n4 = (n.get(k, 0) for k in (1, 2, 3, 4))
    if not (n1 and n2 and n3 and n4):
        return (0.5, 1.0, 1.5)  # too few distinct counts for the estimate: mild fixed discounts
    y = n1 / (n1 + 2 * n2)
    return (
        max(1 - 2 * y * n2 / n1, 0.0),
        max(2 - 3 * y * n3 / n2, 0.0),
        max(3 - 4 * y * n4 / n3, 0.0),
    )


def label_sequences(data: str, split: str) -> list[list[str]]:
    """Each utterance's phoneme names, read from the split's shards (flagged repeats left out)."""
    sentences = []
    for batch in BatchStream(data, split, max_frames=10**9):
        for i in range(len(batch.ids)):
            if not batch.repeated[i]:
                sentences.append([PHONEMES[k] for k in batch.labels[i, : batch.label_lengths[i]].tolist()])
    return sentences


def build(data: str, order: int, out: str) -> dict:
    """Estimate from ``data``'s train split, publish the ARPA file at ``out`` (atomically); the
    figures: n-gram counts and perplexities on train and dev."""
    started = time.monotonic()
    train = label_sequences(data, "train")
    model = estimate(train, order)
    publish_at(out, arpa_bytes(model))
    counts = Counter(len(g) for g in model.logprob)
    return {
        "lm": out,
        "order": order,
        "ngrams": [counts[n] for n in range(1, order + 1)],
        "train_utterances": len(train),
        "train_perplexity": round(model.perplexity(train), 3),
        "dev_perplexity": round(model.perplexity(label_sequences(data, "dev")), 3),
        "seconds": round(time.monotonic() - started, 1),
    }


@dataclasses.dataclass(frozen=True)
class Estimation:
    data: str  # a dataset: its train split is counted, its dev split measured
    out: str  # where the ARPA file is published
    order: int = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Url, required=True, help="dataset URL (its train and dev splits)")
    parser.add_argument("--order", type=int, default=Estimation.order)
    parser.add_argument("--out", type=Url, required=True, help="where to write the ARPA file (local or URL)")


def run(args: argparse.Namespace) -> int:
    request = request_of(Estimation, args)
    print(json.dumps(build(request.data, request.order, request.out)))
    return 0

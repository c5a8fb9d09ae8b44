"""CTC prefix beam search with a phoneme n-gram LM, ``alpha`` and ``beta``, as ctcdecode scores it.

A prefix's score is ln(p_blank + p_nonblank) of its CTC paths, into which each extension by a
phoneme k folds ``alpha · ln p_LM(k | context) + beta`` (so ``beta`` is a per-phoneme bonus and
``alpha`` weighs the LM's natural-log probability); at the end ``alpha · ln p_LM(</s> | context)``
is added. With a wide beam the best prefix maximises ln P_CTC(labelling) + alpha · ln P_LM(labelling
</s>) + beta · length (tested against exhaustive search). Compiled with numba: prefixes are nodes of
a trie (parent, phoneme, LM context, first frame); each frame extends every beam prefix by the
``top_n`` likeliest phonemes of that frame and keeps the ``beam_width`` best.

The LM is the dense table of ``eval.lm.dense_table``: row = context (the last order − 1 symbols,
base 41), column 0 = ``</s>``, columns 1..40 the phonemes.
"""

import math

import numba
import numpy as np

NEG_INF = -math.inf


@numba.njit(cache=True, inline="always")
def _log_add(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@numba.njit(cache=True)
def prefix_beam_search(emissions, beam_width, top_n, table, alpha, beta, top_paths):
    """``emissions`` (T, C) natural-log CTC posteriors, blank at 0; ``table`` (contexts, C) float32.

    Returns (node parent, node phoneme, node first frame, best nodes, their scores): the caller
    walks each best node's parents for its labelling.
    """
    frames, classes = emissions.shape
    contexts = table.shape[0]
    capacity = 1 + frames * beam_width * top_n
    parent = np.empty(capacity, np.int64)
    phoneme = np.empty(capacity, np.int64)
    context = np.empty(capacity, np.int64)
    first_frame = np.empty(capacity, np.int64)
    parent[0], phoneme[0], context[0], first_frame[0] = -1, 0, 0, -1  # the empty prefix after <s>
    nodes = 1
    children = numba.typed.Dict.empty(numba.types.int64, numba.types.int64)
    next_blank = np.full(capacity, NEG_INF)  # this frame's sums, valid where stamp == t
    next_other = np.full(capacity, NEG_INF)
    stamp = np.full(capacity, -1, np.int64)
    beam = np.zeros(1, np.int64)
    blank_score = np.zeros(1)
    other_score = np.full(1, NEG_INF)
    touched = np.empty(beam_width * (top_n + 1), np.int64)
    for t in range(frames):
        row = emissions[t]
        candidates = np.argsort(-row)[:top_n]
        count = 0
        for b in range(beam.shape[0]):
            node = beam[b]
            total = _log_add(blank_score[b], other_score[b])
            if stamp[node] != t:
                stamp[node], next_blank[node], next_other[node] = t, NEG_INF, NEG_INF
                touched[count] = node
                count += 1
            next_blank[node] = _log_add(next_blank[node], total + row[0])  # a blank: the same prefix
            last = phoneme[node]
            if node != 0:  # the last phoneme again, no blank between: the same prefix
                next_other[node] = _log_add(next_other[node], other_score[b] + row[last])
            for k in candidates:
                if k == 0:
                    continue
                key = node * classes + k
                if key in children:
                    child = children[key]
                else:
                    child = nodes
                    nodes += 1
                    children[key] = child
                    parent[child], phoneme[child], first_frame[child] = node, k, t
                    context[child] = (context[node] * classes + k) % contexts
                if stamp[child] != t:
                    stamp[child], next_blank[child], next_other[child] = t, NEG_INF, NEG_INF
                    touched[count] = child
                    count += 1
                # the same phoneme twice needs a blank between them
                source = blank_score[b] if k == last and node != 0 else total
                bonus = alpha * table[context[node], k] + beta
                next_other[child] = _log_add(next_other[child], source + row[k] + bonus)
        scores = np.empty(count)
        for i in range(count):
            scores[i] = _log_add(next_blank[touched[i]], next_other[touched[i]])
        keep = np.argsort(-scores)[:beam_width]
        beam = touched[keep].copy()
        blank_score = next_blank[beam].copy()
        other_score = next_other[beam].copy()
    final = np.empty(beam.shape[0])
    for b in range(beam.shape[0]):
        node = beam[b]
        final[b] = _log_add(blank_score[b], other_score[b]) + alpha * table[context[node], 0]
    order = np.argsort(-final)[:top_paths]
    return parent[:nodes], phoneme[:nodes], first_frame[:nodes], beam[order], final[order]


def labelling(node: int, parent: np.ndarray, phoneme: np.ndarray, first_frame: np.ndarray):
    """(phonemes, first frames) of the prefix ending at ``node``."""
    labels, frames = [], []
    while node > 0:
        labels.append(int(phoneme[node]))
        frames.append(int(first_frame[node]))
        node = int(parent[node])
    return labels[::-1], frames[::-1]

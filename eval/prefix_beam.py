"""The CTC prefix beam search every beam decoder here runs: with or without a token LM, whole or in chunks.

A prefix's score is ln(p_blank + p_nonblank) of its CTC paths (summed over the alignments the
beam kept), into which each extension by a label k folds ``alpha · ln p_LM(k | context) + beta``;
at the end ``alpha · ln p_LM(</s> | context)`` is added. Without an LM the table is one row of
zeros and alpha = beta = 0, so the search is the same code with nothing folded in. With a wide
beam the best prefix maximises ln P_CTC(labelling) + alpha · ln P_LM(labelling </s>) + beta ·
length (tested against exhaustive search).

Prefixes are nodes of a trie (parent, label, LM context, depth, LM log-probability, and the frame
where the label's probability peaked among the frames that extended the prefix by it: ctcdecode's
timestep). Each frame extends every beam prefix by the frame's candidate labels (the ``top_n``
likeliest, fewer where they already reach ``cutoff_prob``) and keeps the ``beam_width`` best;
the blank and a repeat of a prefix's last label are always followed.

The LM is a table of natural-log probabilities: row = context, the last ``order − 1`` symbols
as an integer base C (C = classes; the blank's index stands for ``<s>``), column = label, the
blank's column holding ``</s>``. A dense table has every row (row index = context); a sparse one
(``row_of``: context → row) has the rows asked for so far, and :func:`advance` stops at the
first frame that needs a row it lacks, for the caller to add them and call again.
"""

import math
from dataclasses import dataclass

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


@numba.njit(cache=True, inline="always")
def _row(context: int, dense: bool, row_of) -> int:
    if dense:
        return context
    return row_of.get(context, -1)


@numba.njit(cache=True, nogil=True)
def _candidates(row: np.ndarray, top_n: int, cutoff_prob: float) -> np.ndarray:
    """The frame's likeliest labels: at most ``top_n``, and no more than reach ``cutoff_prob``."""
    order = np.argsort(-row)[:top_n]
    if cutoff_prob >= 1.0:
        return order
    total = 0.0
    for i in range(order.shape[0]):
        total += math.exp(row[order[i]])
        if total >= cutoff_prob - 1e-6:  # float32 probabilities: 0.5 + 0.3 must reach 0.8
            return order[: i + 1]
    return order


@numba.njit(cache=True, nogil=True)
def advance(
    emissions,
    first_frame,
    beam_width,
    top_n,
    cutoff_prob,
    blank,
    table,
    dense,
    row_of,
    contexts,
    alpha,
    beta,
    nodes,
    parent,
    label,
    context,
    depth,
    lm_logp,
    peak_logp,
    peak_frame,
    children,
    next_blank,
    next_other,
    stamp,
    beam,
    blank_score,
    other_score,
):
    """Runs ``emissions`` (n, C) natural-log posteriors, frame ``first_frame`` onwards, from the
    beam (``beam``, ``blank_score``, ``other_score``) over a trie of ``nodes`` nodes.

    Returns (frames run, nodes, beam, blank scores, other scores); fewer frames than n when a
    sparse table lacks the row of a beam prefix's context (the caller adds it and resumes).
    ``contexts`` = C^(order − 1). The trie's arrays must hold ``nodes + n · beam_width · top_n``.
    """
    frames, classes = emissions.shape
    touched = np.empty(beam_width * (top_n + 1), np.int64)
    for f in range(frames):
        t = first_frame + f
        rows = np.empty(beam.shape[0], np.int64)
        for b in range(beam.shape[0]):
            rows[b] = _row(context[beam[b]], dense, row_of)
            if rows[b] < 0:
                return f, nodes, beam, blank_score, other_score
        emission = emissions[f]
        candidates = _candidates(emission, top_n, cutoff_prob)
        count = 0
        for b in range(beam.shape[0]):
            node = beam[b]
            total = _log_add(blank_score[b], other_score[b])
            if stamp[node] != t:
                stamp[node], next_blank[node], next_other[node] = t, NEG_INF, NEG_INF
                touched[count] = node
                count += 1
            next_blank[node] = _log_add(next_blank[node], total + emission[blank])  # the same prefix
            last = label[node]
            if node != 0:  # the last label again, no blank between: the same prefix
                next_other[node] = _log_add(next_other[node], other_score[b] + emission[last])
            for k in candidates:
                if k == blank:
                    continue
                key = node * classes + k
                if key in children:
                    child = children[key]
                else:
                    child = nodes
                    nodes += 1
                    children[key] = child
                    parent[child], label[child], depth[child] = node, k, depth[node] + 1
                    context[child] = (context[node] * classes + k) % contexts
                    lm_logp[child] = lm_logp[node] + table[rows[b], k]
                    peak_logp[child], peak_frame[child] = NEG_INF, t
                if emission[k] > peak_logp[child]:
                    peak_logp[child], peak_frame[child] = emission[k], t
                if stamp[child] != t:
                    stamp[child], next_blank[child], next_other[child] = t, NEG_INF, NEG_INF
                    touched[count] = child
                    count += 1
                # the same label twice needs a blank between them
                source = blank_score[b] if k == last and node != 0 else total
                bonus = alpha * table[rows[b], k] + beta
                next_other[child] = _log_add(next_other[child], source + emission[k] + bonus)
        scores = np.empty(count)
        for i in range(count):
            scores[i] = _log_add(next_blank[touched[i]], next_other[touched[i]])
        keep = np.argsort(-scores, kind="mergesort")[:beam_width]
        kept = keep.shape[0]
        while kept > 1 and scores[keep[kept - 1]] == NEG_INF:  # a prefix no path reaches
            kept -= 1
        keep = keep[:kept]
        beam = touched[keep].copy()
        blank_score = next_blank[beam].copy()
        other_score = next_other[beam].copy()
    return frames, nodes, beam, blank_score, other_score


@dataclass(frozen=True)
class Hypothesis:
    labels: list[int]  # label indices, the blank never among them
    frames: list[int]  # per label, the frame where its probability peaked (ctcdecode's timesteps)
    score: float  # ln P_CTC of the labelling over the alignments the beam kept; no LM, no bonus; 0 greedy


class Table:
    """An LM as the search reads it: every context's row (``dense``), or rows computed by
    ``row_source`` (context symbols → C natural-log probabilities) when first asked for."""

    def __init__(self, rows: np.ndarray, classes: int, order: int, row_source=None):
        self.rows, self.classes, self.order, self.row_source = rows, classes, order, row_source
        self.dense = row_source is None
        self.contexts = classes ** (order - 1)
        self.row_of = numba.typed.Dict.empty(numba.types.int64, numba.types.int64)  # what advance reads
        self.row_index: dict[int, int] = {}  # the same, for Python's lookups (a typed Dict's are slow)

    @classmethod
    def flat(cls, classes: int) -> "Table":
        """No LM: one context whose every label scores ln 1."""
        return cls(np.zeros((1, classes), np.float32), classes, 1)

    def start_context(self, blank: int) -> int:
        """``order − 1`` times ``<s>`` (the blank's index)."""
        return sum(blank * self.classes**i for i in range(self.order - 1))

    def row_indices(self, contexts: np.ndarray) -> np.ndarray:
        """The rows of ``contexts``, computing those a sparse table lacks."""
        if self.dense:
            return contexts
        contexts = contexts.tolist()
        missing = sorted({c for c in contexts if c not in self.row_index})
        if missing:
            self._add(missing)
        return np.array([self.row_index[c] for c in contexts], np.int64)

    def _add(self, contexts: list[int]) -> None:
        start = len(self.row_index)  # rows filled so far; the array holds room for more
        if start + len(contexts) > self.rows.shape[0]:  # grown by doubling: no copy per row added
            grown = np.empty(
                (max(2 * self.rows.shape[0], start + len(contexts), 64), self.classes), np.float32
            )
            grown[:start] = self.rows[:start]
            self.rows = grown
        for i, context in enumerate(contexts):
            self.rows[start + i] = self.row_source(self._symbols(context))
            self.row_of[context] = self.row_index[context] = start + i

    def _symbols(self, context: int) -> list[int]:
        """The ``order − 1`` symbols of a context, oldest first."""
        symbols = []
        for _ in range(self.order - 1):
            context, symbol = divmod(context, self.classes)
            symbols.append(symbol)
        return symbols[::-1]


class PrefixSearch:
    """One utterance's search, fed frames whole or chunk by chunk (online decoding)."""

    def __init__(
        self,
        beam_width: int,
        top_n: int,
        cutoff_prob: float,
        blank: int,
        table: Table,
        alpha: float,
        beta: float,
    ):
        self.beam_width, self.top_n, self.cutoff_prob, self.blank = beam_width, top_n, cutoff_prob, blank
        self.table, self.alpha, self.beta = table, alpha, beta
        self.frames_done, self.nodes = 0, 1
        self._grow(1)
        self.parent[0], self.label[0], self.depth[0] = -1, blank, 0
        self.context[0] = table.start_context(blank)
        self.lm_logp[0], self.peak_logp[0], self.peak_frame[0] = 0.0, NEG_INF, -1
        self.children = numba.typed.Dict.empty(numba.types.int64, numba.types.int64)
        self.beam = np.zeros(1, np.int64)
        self.blank_score, self.other_score = np.zeros(1), np.full(1, NEG_INF)

    _NODE_ARRAYS = {
        "parent": np.int64,
        "label": np.int64,
        "context": np.int64,
        "depth": np.int64,
        "lm_logp": np.float64,
        "peak_logp": np.float64,
        "peak_frame": np.int64,
        "next_blank": np.float64,
        "next_other": np.float64,
        "stamp": np.int64,
    }

    def _grow(self, capacity: int) -> None:
        for name, dtype in self._NODE_ARRAYS.items():
            old = getattr(self, name, np.empty(0, dtype))
            if old.shape[0] >= capacity:
                continue
            new = np.empty(max(capacity, 2 * old.shape[0]), dtype)
            new[: old.shape[0]] = old
            if name == "stamp":
                new[old.shape[0] :] = -1
            setattr(self, name, new)

    def feed(self, emissions: np.ndarray) -> None:
        """Advances the search over ``emissions`` (n, C), natural-log posteriors."""
        emissions = np.ascontiguousarray(emissions, dtype=np.float32)
        done = 0
        while done < emissions.shape[0]:
            chunk = emissions[done:]
            self._grow(self.nodes + chunk.shape[0] * self.beam_width * self.top_n)
            table = self.table
            ran, self.nodes, self.beam, self.blank_score, self.other_score = advance(
                chunk,
                self.frames_done,
                self.beam_width,
                self.top_n,
                self.cutoff_prob,
                self.blank,
                table.rows,
                table.dense,
                table.row_of,
                table.contexts,
                self.alpha,
                self.beta,
                self.nodes,
                self.parent,
                self.label,
                self.context,
                self.depth,
                self.lm_logp,
                self.peak_logp,
                self.peak_frame,
                self.children,
                self.next_blank,
                self.next_other,
                self.stamp,
                self.beam,
                self.blank_score,
                self.other_score,
            )
            done += ran
            self.frames_done += ran
            if ran < chunk.shape[0]:
                table.row_indices(self.context[self.beam])

    def best(self) -> list[Hypothesis]:
        """Every beam prefix, best first by its score with the LM's ``</s>``."""
        rows = self.table.row_indices(self.context[self.beam])
        totals = np.logaddexp(self.blank_score, self.other_score)
        ranking = totals + self.alpha * self.table.rows[rows, self.blank]
        acoustic = totals - self.alpha * self.lm_logp[self.beam] - self.beta * self.depth[self.beam]
        order = np.argsort(-ranking, kind="mergesort")
        nodes = self.beam[order]
        labels, frames = _labellings(nodes, self.depth[nodes], self.parent, self.label, self.peak_frame)
        return [
            Hypothesis(labels[b, :n].tolist(), frames[b, :n].tolist(), float(acoustic[order[b]]))
            for b, n in enumerate(self.depth[nodes].tolist())
        ]


@numba.njit(cache=True, nogil=True)
def _labellings(nodes, depths, parent, label, peak_frame):
    """Each node's labelling and peak frames, root to node, as rows of (len(nodes), max depth)."""
    width = max(depths.max(), 1) if depths.shape[0] else 1
    labels = np.zeros((nodes.shape[0], width), np.int64)
    frames = np.zeros((nodes.shape[0], width), np.int64)
    for b in range(nodes.shape[0]):
        node = nodes[b]
        for position in range(depths[b] - 1, -1, -1):
            labels[b, position], frames[b, position] = label[node], peak_frame[node]
            node = parent[node]
    return labels, frames

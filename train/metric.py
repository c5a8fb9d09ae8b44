"""The HW3P2 metric and greedy CTC decoding: the one home for validation, evaluation and ``score``.

A frame path becomes a labelling by merging repeats and dropping blanks (:func:`collapse`).
The metric is the course's: Levenshtein distance between PHONEME_MAP strings, averaged over
utterances; PER is total edits over total reference phonemes.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import Levenshtein

if TYPE_CHECKING:  # the metric runs on torch tensors and numpy arrays alike, without importing torch
    import numpy as np
    import torch

from shards.errors import UserError
from shards.kaggle import public_rows
from shards.vocab import BLANK, to_string


def collapse(path: Sequence[int], blank: int = BLANK) -> tuple[list[int], list[int]]:
    """A frame path's labelling (merge repeats, drop blanks) and the frame where each label starts."""
    labels, frames, previous = [], [], None
    for frame, token in enumerate(path):
        if token != previous and token != blank:
            labels.append(int(token))
            frames.append(frame)
        previous = token
    return labels, frames


def greedy_paths(
    log_probs: "torch.Tensor | np.ndarray", lengths: "torch.Tensor | np.ndarray"
) -> list[list[int]]:
    """Best path per utterance of (B, T, C) log-probabilities, frame by frame within its length: a
    torch tensor's argmax is taken on its device, and only the labels are copied to the host."""
    best = log_probs.argmax(-1).tolist()
    return [path[:length] for path, length in zip(best, lengths.tolist(), strict=True)]


def greedy_decode(
    log_probs: "torch.Tensor | np.ndarray", lengths: "torch.Tensor | np.ndarray"
) -> list[list[int]]:
    """Best path per utterance of (B, T, C) log-probabilities, collapsed."""
    return [collapse(path)[0] for path in greedy_paths(log_probs, lengths)]


@dataclass
class Score:
    utterances: int = 0
    edits: int = 0
    reference_phonemes: int = 0
    # of greedy paths (add_path): blank output frames, output frames, empty labellings
    blank_frames: int = 0
    frames: int = 0
    empty: int = 0

    def add_strings(self, hypothesis: str, reference: str) -> None:
        """One utterance, both as PHONEME_MAP strings (one character per phoneme)."""
        self.utterances += 1
        self.edits += Levenshtein.distance(hypothesis, reference)
        self.reference_phonemes += len(reference)

    def add(self, hypothesis: list[int], reference: list[int]) -> None:
        """One utterance, both as label indices."""
        self.add_strings(to_string(hypothesis), to_string(reference))

    def add_path(self, path: list[int], reference: list[int]) -> None:
        """One utterance's greedy best path (uncollapsed): scored, its blanks and emptiness counted."""
        labels = collapse(path)[0]
        self.add(labels, reference)
        self.blank_frames += sum(1 for token in path if token == BLANK)
        self.frames += len(path)
        self.empty += not labels

    def merge(self, other: "Score") -> "Score":
        return Score(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Score)))

    @property
    def blank_share(self) -> float:
        """Of the greedy paths' output frames, the share that are blank."""
        return self.blank_frames / max(self.frames, 1)

    @property
    def empty_share(self) -> float:
        """Of the utterances given as paths, the share whose labelling is empty."""
        return self.empty / max(self.utterances, 1)

    @property
    def mean_distance(self) -> float:
        return self.edits / max(self.utterances, 1)

    @property
    def per(self) -> float:
        return self.edits / max(self.reference_phonemes, 1)


def boards(
    predictions: dict[int, str], references: dict[int, str], where: str, share: float
) -> dict[str, Score]:
    """Kaggle's two boards besides the whole: ``public`` (shards.kaggle.public_rows of the
    solution's rows) and ``private`` (the rest), each scored as :func:`score` scores."""
    whole = score(predictions, references, where)  # every reference predicted, and nothing else

    def on(rows: set[int]) -> Score:
        return score({k: predictions[k] for k in rows}, {k: references[k] for k in rows}, where)

    public = public_rows(list(references), share)
    return {"all": whole, "public": on(public), "private": on(references.keys() - public)}


def score(predictions: dict[Hashable, str], references: dict[Hashable, str], where: str) -> Score:
    """Kaggle's scoring: every reference must be predicted, and nothing else."""
    missing, extra = references.keys() - predictions.keys(), predictions.keys() - references.keys()
    if missing or extra:
        raise UserError(
            f"{where}: {len(missing)} ids of the solution are missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} are not in it (e.g. {sorted(extra)[:3]})"
        )
    total = Score()
    for key, reference in references.items():
        total.add_strings(predictions[key], reference)
    return total

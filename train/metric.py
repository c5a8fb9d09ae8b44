"""Greedy CTC decoding and the HW3P2 metric, as validation during training needs them.

The metric is the course's: Levenshtein distance between PHONEME_MAP strings, averaged over
utterances; PER is total edits over total reference phonemes. Evaluation uses the same code.
"""

from dataclasses import dataclass

import Levenshtein
import torch

from shards.vocab import BLANK, to_string


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path per utterance of (B, T, C) log-probabilities: argmax, collapse repeats, drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()
    decoded = []
    for path, length in zip(best, lengths.cpu().tolist(), strict=True):
        path = path[:length]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        decoded.append([int(i) for i in path[keep] if i != BLANK])
    return decoded


def distance(hypothesis: list[int], reference: list[int]) -> int:
    return Levenshtein.distance(to_string(hypothesis), to_string(reference))


@dataclass
class Score:
    utterances: int = 0
    edits: int = 0
    reference_phonemes: int = 0

    def add(self, hypothesis: list[int], reference: list[int]) -> None:
        self.utterances += 1
        self.edits += distance(hypothesis, reference)
        self.reference_phonemes += len(reference)

    def merge(self, other: "Score") -> "Score":
        return Score(
            self.utterances + other.utterances,
            self.edits + other.edits,
            self.reference_phonemes + other.reference_phonemes,
        )

    @property
    def mean_distance(self) -> float:
        return self.edits / max(self.utterances, 1)

    @property
    def per(self) -> float:
        return self.edits / max(self.reference_phonemes, 1)

"""Phoneme sentences with structure an LM can learn: what the LM tests estimate from and score."""

import numpy as np

from shards.vocab import PHONEMES


def markov_sentences(count: int, seed: int) -> list[list[str]]:
    """Phoneme sequences from a peaky random bigram chain: structure an LM can learn."""
    rng = np.random.default_rng(seed)
    transitions = np.random.default_rng(99).dirichlet(np.full(40, 0.3), size=40)
    sentences = []
    for _ in range(count):
        states = [int(rng.integers(40))]
        for _ in range(int(rng.integers(1, 40))):
            states.append(int(rng.choice(40, p=transitions[states[-1]])))
        sentences.append([PHONEMES[1 + s] for s in states])
    return sentences

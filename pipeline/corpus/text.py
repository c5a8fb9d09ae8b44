"""Sentences drawn from Festival's own lexicon, so no word is spoken by letter-to-sound guesses."""

import re
from pathlib import Path

import numpy as np

from shards.errors import MissingInput, UserError

FESTIVAL_LEXICON = Path("/usr/share/festival/dicts/cmu/cmudict-0.4.out")
_ENTRY = re.compile(r'^\("([a-z]+)" ', re.MULTILINE)


def lexicon_words(path: Path = FESTIVAL_LEXICON) -> list[str]:
    """Plain lower-case words of a Festival lexicon file (or one word per line), sorted and unique."""
    if not path.exists():
        raise MissingInput(f"{path}: lexicon not found (Debian package festlex-cmu; make setup installs it)")
    text = path.read_text(encoding="latin-1")
    words = _ENTRY.findall(text) if text.startswith("MNCL") else text.split()
    words = sorted({w for w in words if w.isalpha() and w.islower() and (len(w) > 1 or w in "ai")})
    if not words:
        raise UserError(f"{path}: no words found")
    return words


def random_sentence(rng: np.random.Generator, words: list[str], length: tuple[int, int]) -> str:
    count = int(rng.integers(length[0], length[1] + 1))
    return " ".join(words[i] for i in rng.integers(0, len(words), size=count))

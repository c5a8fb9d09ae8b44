"""The HW3P2 phoneme vocabulary: 41 CTC classes (blank at 0) and their one-character map.

Transcripts come in two spellings across semesters and both parse to the same indices:
Spring 2022 writes ``<sos> SIL ... <eos>``; later semesters write ``[SOS] [SIL] ... [EOS]``.
"""

from collections.abc import Iterable, Sequence

from shards.errors import UserError

BLANK = 0

PHONEMES: tuple[str, ...] = (
    "",  # CTC blank
    "SIL",
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)

# One character per class, in the order of PHONEMES; the leaderboard metric compares these strings.
PHONEME_MAP = " .aAhowybcdDerEfgHiIjklmnNOYpRsStTuUvW?zZ"

NUM_CLASSES = len(PHONEMES)

_INDEX = {symbol: i for i, symbol in enumerate(PHONEMES) if symbol}
_INDEX["[SIL]"] = _INDEX["SIL"]  # later semesters bracket the silence symbol
_START_MARKERS = {"<sos>", "[SOS]"}
_END_MARKERS = {"<eos>", "[EOS]"}

assert len(PHONEME_MAP) == NUM_CLASSES == 41


class TranscriptError(UserError, ValueError):
    """A transcript that cannot be turned into label indices; the message names the file."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def parse_transcript(symbols: Iterable[str], source: str) -> list[int]:
    """Label indices (1..40) of a transcript, without its start/end markers.

    ``source`` names the file in error messages. Markers are only accepted at the ends;
    anything else that is not one of the 40 phonemes is an error.
    """
    tokens = [str(s) for s in symbols]
    if tokens and tokens[0] in _START_MARKERS:
        tokens = tokens[1:]
    if tokens and tokens[-1] in _END_MARKERS:
        tokens = tokens[:-1]
    if not tokens:
        raise TranscriptError(source, "empty transcript (no phonemes between the markers)")
    labels = []
    for position, token in enumerate(tokens):
        index = _INDEX.get(token)
        if index is None:
            raise TranscriptError(source, f"unknown phoneme {token!r} at position {position}")
        labels.append(index)
    return labels


def to_string(labels: Sequence[int]) -> str:
    """The PHONEME_MAP string of label indices, as submissions and the metric write them."""
    return "".join(PHONEME_MAP[i] for i in labels)

import numpy as np
import pytest

from shards.vocab import NUM_CLASSES, PHONEME_MAP, PHONEMES, TranscriptError, parse_transcript, to_string


def test_vocabulary_has_blank_first_and_one_character_per_class():
    assert NUM_CLASSES == 41 and PHONEMES[0] == "" and PHONEMES[1] == "SIL"
    # Invariant: the metric's strings are unambiguous
    assert len(set(PHONEME_MAP)) == NUM_CLASSES


@pytest.mark.parametrize(
    "symbols",
    [
        ["<sos>", "SIL", "HH", "AH", "L", "OW", "SIL", "<eos>"],  # Spring 2022
        ["[SOS]", "[SIL]", "HH", "AH", "L", "OW", "[SIL]", "[EOS]"],  # later semesters
        np.array(["<sos>", "SIL", "HH", "AH", "L", "OW", "SIL", "<eos>"]),  # as np.load returns it
    ],
)
def test_both_semester_variants_parse_to_the_same_labels(symbols):
    labels = parse_transcript(symbols, "t.npy")
    assert labels == [1, 17, 4, 22, 26, 1]
    assert to_string(labels) == ".HhlO."


def test_unknown_symbol_names_file_and_symbol():
    with pytest.raises(TranscriptError, match=r"train/transcript/a\.npy: unknown phoneme 'XX' at position 2"):
        parse_transcript(["<sos>", "SIL", "AA", "XX", "<eos>"], "train/transcript/a.npy")


def test_markers_are_only_accepted_at_the_ends():
    with pytest.raises(TranscriptError, match="unknown phoneme '<eos>'"):
        parse_transcript(["<sos>", "AA", "<eos>", "AA"], "a.npy")


def test_empty_transcript_is_an_error():
    with pytest.raises(TranscriptError, match="empty transcript"):
        parse_transcript(["<sos>", "<eos>"], "a.npy")

"""Turns one utterance's raw files into checked arrays, or says precisely why it cannot be used.

Every reason an utterance is refused is a :class:`Rejected` naming the file at fault; the
caller writes it to ``rejects.csv``. Nothing is unpickled: ``np.load(allow_pickle=False)``.
"""

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from pipeline.layout import SourceUtterance
from shards.vocab import TranscriptError, parse_transcript

NPY_MAGIC = b"\x93NUMPY"


class Rejected(Exception):
    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class CheckedUtterance:
    source: SourceUtterance
    features: np.ndarray  # (T, D) as stored, not yet normalised
    labels: list[int] | None  # None for unlabelled splits
    digest: str  # of the raw file bytes, so a resumed run can tell the inputs are unchanged


def _load_npy(data: bytes | Exception, path: str) -> np.ndarray:
    if isinstance(data, Exception):
        raise Rejected(path, f"unreadable: {data}")
    if not data.startswith(NPY_MAGIC):
        # np.load would hand anything without the magic to pickle
        if data.startswith(b"\x80"):
            raise Rejected(path, "pickled data, not a .npy array: refused")
        raise Rejected(path, f"unreadable .npy: no NUMPY header ({len(data)} bytes)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise Rejected(path, "pickled .npy (object array) refused") from error
        raise Rejected(path, f"unreadable .npy: {error}") from error
    except (OSError, EOFError) as error:
        raise Rejected(path, f"unreadable .npy: {error}") from error


def _check_features(data: bytes | Exception, path: str) -> np.ndarray:
    features = _load_npy(data, path)
    if features.dtype.kind not in "fiu":
        raise Rejected(path, f"features have dtype {features.dtype}, expected numbers")
    if features.ndim != 2:
        raise Rejected(path, f"features have shape {features.shape}, expected (frames, coefficients)")
    if len(features) == 0:
        raise Rejected(path, "zero frames")
    bad_frames = int((~np.isfinite(features)).any(axis=1).sum())
    if bad_frames:
        raise Rejected(path, f"non-finite values (NaN/Inf) in {bad_frames} of {len(features)} frames")
    return features


def _check_transcript(data: bytes | Exception, path: str) -> list[int]:
    symbols = _load_npy(data, path)
    if symbols.ndim != 1 or symbols.dtype.kind not in "US":
        raise Rejected(path, f"transcript is {symbols.dtype} {symbols.shape}, expected a list of strings")
    try:
        return parse_transcript(symbols.astype(str), path)
    except TranscriptError as error:
        raise Rejected(path, error.reason) from error


def ctc_min_frames(labels: list[int]) -> int:
    """Fewest frames CTC needs for ``labels``: one each, plus a blank between equal neighbours."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats


def check_utterance(
    source: SourceUtterance,
    features: bytes | Exception | None,
    transcript: bytes | Exception | None,
) -> CheckedUtterance:
    """The checked utterance from its raw file contents (None where the file is absent).

    Raises :class:`Rejected`.
    """
    if features is None:
        raise Rejected(
            source.features, "missing: the id has a transcript or test_order entry but no features"
        )
    array = _check_features(features, source.features)
    digest = hashlib.blake2b(features, digest_size=16)  # bytes: _check_features refused an error
    labels = None
    if source.transcript is not None:
        if transcript is None:
            raise Rejected(source.transcript, "missing: the id has features but no transcript")
        labels = _check_transcript(transcript, source.transcript)
        digest.update(transcript)
        needed = ctc_min_frames(labels)
        if needed > len(array):
            raise Rejected(
                source.transcript,
                f"{len(labels)} phonemes need at least {needed} frames for CTC, features have {len(array)}",
            )
    return CheckedUtterance(source, array, labels, digest.hexdigest())

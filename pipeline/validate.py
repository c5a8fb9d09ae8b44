"""Turns one utterance's raw files into checked arrays, or says precisely why it cannot be used.

Every reason an utterance is refused is a :class:`Rejected` naming the file at fault; the
caller writes it to ``rejects.csv``. ``.npy`` files are read by ``shards.sample.load_npy``:
never unpickled, and only after the header's declared size matches the bytes present. Features are judged as the shards will store
them, in float32, bounded by what MFCCs can be.
"""

import hashlib
import unicodedata
from dataclasses import dataclass

import numpy as np

from pipeline.layout import SourceUtterance
from shards.sample import load_npy
from shards.vocab import TranscriptError, parse_transcript

# No MFCC comes near this (log-mel cepstra are within a few thousand even for unscaled int16
# audio); the bound keeps one hostile file from overflowing the dataset's statistics.
MAX_ABS_FEATURE = 1e5


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
    try:
        return load_npy(data)
    except ValueError as error:
        raise Rejected(path, str(error)) from error


def check_features(data: bytes | Exception, path: str) -> np.ndarray:
    """The features as float32 (what the shards store), or the reason they cannot be used."""
    features = _load_npy(data, path)
    if features.dtype.kind not in "fiu":
        raise Rejected(path, f"features have dtype {features.dtype}, expected numbers")
    if features.ndim != 2:
        raise Rejected(path, f"features have shape {features.shape}, expected (frames, coefficients)")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise Rejected(path, f"features have shape {features.shape}: zero frames or coefficients")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf
        values = features.astype(np.float32)
    bad_frames = int((~np.isfinite(values)).any(axis=1).sum())
    if bad_frames:
        raise Rejected(
            path,
            f"non-finite values in float32 (NaN/Inf, or beyond float32's range) in {bad_frames} of {len(values)} frames",
        )
    huge_frames = int((np.abs(values) > MAX_ABS_FEATURE).any(axis=1).sum())
    if huge_frames:
        raise Rejected(
            path,
            f"values beyond ±{MAX_ABS_FEATURE:g} (no MFCC is that large) in {huge_frames} of {len(values)} frames",
        )
    return values


def unrepresentable_id(utterance_id: str) -> str | None:
    """Why an id cannot travel through CSV files, tar members and logs unchanged, or None."""
    if not utterance_id:
        return "empty id"
    bad = sorted({c for c in utterance_id if unicodedata.category(c).startswith("C")})
    if bad:
        names = ", ".join(f"U+{ord(c):04X}" for c in bad[:3])
        return f"the id holds control, non-UTF-8 or unassigned characters ({names}): cannot be represented"
    return None


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
    if source.refused is not None:
        raise Rejected(*source.refused)
    problem = unrepresentable_id(source.id)
    if problem:
        raise Rejected(source.features, problem)
    if features is None:
        raise Rejected(
            source.features, "missing: the id has a transcript or test_order entry but no features"
        )
    array = check_features(features, source.features)
    digest = hashlib.blake2b(features, digest_size=16)  # bytes: check_features refused an error
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

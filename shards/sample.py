"""How one utterance is stored inside a shard, and back.

A sample is a group of tar members sharing one key (WebDataset's convention):

- ``<key>.id.txt``     the utterance id, UTF-8 (ids may hold dots, which keys may not)
- ``<key>.feats.npy``  normalised features, float32, shape (T, D)
- ``<key>.labels.npy`` label indices 1..40, int16, shape (L,); absent for unlabelled splits

The key is the utterance's zero-padded position in its split's length-sorted order.
Decoding never unpickles: ``np.load(..., allow_pickle=False)`` on the project's own keys only.
"""

import io
from dataclasses import dataclass

import numpy as np

FEATURES = "feats.npy"
LABELS = "labels.npy"
ID = "id.txt"


@dataclass(frozen=True)
class Utterance:
    id: str
    features: np.ndarray  # float32 (T, D)
    labels: np.ndarray | None  # int16 (L,), None where the split has no transcripts


def sample_key(position: int) -> str:
    return f"{position:09d}"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode(utterance: Utterance) -> dict[str, bytes]:
    """Member extension → bytes of one utterance's sample (the tar member is ``<key>.<extension>``)."""
    sample = {
        ID: utterance.id.encode("utf-8"),
        FEATURES: _npy_bytes(np.ascontiguousarray(utterance.features, dtype=np.float32)),
    }
    if utterance.labels is not None:
        sample[LABELS] = _npy_bytes(np.asarray(utterance.labels, dtype=np.int16))
    return sample


def decode(sample: dict[str, bytes], where: str = "") -> Utterance:
    """The utterance stored in a raw sample (member name → bytes); ``where`` names the shard in errors."""
    try:
        features = np.load(io.BytesIO(sample[FEATURES]), allow_pickle=False)
        labels = np.load(io.BytesIO(sample[LABELS]), allow_pickle=False) if LABELS in sample else None
        utterance_id = sample[ID].decode("utf-8")
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{where}: sample is malformed: {error}") from error
    return Utterance(utterance_id, features, labels)

"""How one utterance is stored inside a shard, and back.

A sample is a group of tar members sharing one key (WebDataset's convention):

- ``<key>.id.txt``     the utterance id, UTF-8 (ids may hold dots, which keys may not)
- ``<key>.feats.npy``  normalised features, float32, shape (T, D)
- ``<key>.labels.npy`` label indices 1..40, int16, shape (L,); absent for unlabelled splits

The key is the utterance's zero-padded position in its split's length-sorted order.
Decoding never unpickles: :func:`load_npy`, on the project's own keys only.
"""

import io
import math
from dataclasses import dataclass

import numpy as np

from shards.vocab import NUM_CLASSES

FEATURES = "feats.npy"
LABELS = "labels.npy"
ID = "id.txt"


@dataclass(frozen=True)
class Utterance:
    id: str
    features: np.ndarray  # float32 (T, D)
    labels: np.ndarray | None  # int16 (L,), None where the split has no transcripts


NPY_MAGIC = b"\x93NUMPY"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_npy_header(data: bytes) -> None:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _HEADER_READERS:
            raise ValueError(f"unreadable .npy: format version {version[0]}.{version[1]} is not supported")
        shape, _, dtype = _HEADER_READERS[version](stream)
    except (ValueError, EOFError, SyntaxError) as error:
        raise ValueError(f"unreadable .npy: {error}") from error
    if dtype.hasobject:
        raise ValueError("pickled .npy (object array) refused")
    declared = math.prod(shape) * dtype.itemsize
    present = len(data) - stream.tell()
    if declared != present:
        raise ValueError(
            f"truncated or padded .npy: the header declares {shape} {dtype} ({declared} bytes), the file holds {present}"
        )


def load_npy(data: bytes) -> np.ndarray:
    """The array of a ``.npy`` file's bytes, or a ValueError saying why not.

    Never unpickles, and checks the header's declared size against the bytes present before
    numpy allocates anything: a 192-byte file cannot ask for terabytes.
    """
    if not data.startswith(NPY_MAGIC):  # np.load would hand anything without the magic to pickle
        if data.startswith(b"\x80"):
            raise ValueError("pickled data, not a .npy array: refused")
        raise ValueError(f"unreadable .npy: no NUMPY header ({len(data)} bytes)")
    _check_npy_header(data)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"unreadable .npy: {error}") from error


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
        features = load_npy(sample[FEATURES])
        labels = load_npy(sample[LABELS]) if LABELS in sample else None
        utterance_id = sample[ID].decode("utf-8")
    except (KeyError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{where}: sample is malformed: {error}") from error
    if features.dtype != np.float32 or features.ndim != 2 or len(features) == 0:
        raise ValueError(f"{where}: sample is malformed: features are {features.dtype} {features.shape}")
    if labels is not None and (
        labels.dtype != np.int16 or labels.ndim != 1 or ((labels < 1) | (labels >= NUM_CLASSES)).any()
    ):
        raise ValueError(f"{where}: sample is malformed: labels are not phoneme indices 1..{NUM_CLASSES - 1}")
    return Utterance(utterance_id, features, labels)

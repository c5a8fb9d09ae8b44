"""Global per-coefficient feature statistics (cepstral mean and variance normalisation).

Statistics are kept as (frame count, mean, sum of squared deviations) in float64 and
combined with Chan et al.'s pairwise update, which is exact in real arithmetic: any split
of the data into parts (utterances, workers, machines) merges to the same result as one
pass, up to float64 rounding. The dataset's ``stats.json`` holds them, so that test data
met later is normalised exactly like the training data the model saw.
"""

import json
from dataclasses import dataclass

import fsspec
import numpy as np

from shards.manifest import DatasetError

MIN_STD = 1e-8  # a constant coefficient is centred but not blown up


@dataclass(frozen=True)
class FeatureStats:
    count: int  # frames seen
    mean: np.ndarray  # float64 (D,)
    m2: np.ndarray  # float64 (D,), sum of squared deviations from the mean

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        """Statistics of one (T, D) array."""
        values = np.asarray(features, dtype=np.float64)
        mean = values.mean(axis=0)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0))

    @classmethod
    def empty(cls, dim: int) -> "FeatureStats":
        return cls(0, np.zeros(dim), np.zeros(dim))

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return FeatureStats(count, mean, m2)

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation, floored at MIN_STD."""
        return np.maximum(np.sqrt(self.m2 / max(self.count, 1)), MIN_STD)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """(x - mean) / std in float64, returned as float32."""
        values = np.asarray(features, dtype=np.float64)
        return ((values - self.mean) / self.std).astype(np.float32)

    def document(self) -> dict:
        """What stats.json holds: feature_dim, frames, mean, std, m2 (plain lists)."""
        return {
            "feature_dim": self.dim,
            "frames": self.count,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "m2": self.m2.tolist(),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.document(), indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "FeatureStats":
        try:
            document = json.loads(data)
            stats = cls(
                int(document["frames"]),
                np.array(document["mean"], dtype=np.float64),
                np.array(document["m2"], dtype=np.float64),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{where}: not a statistics file ({error})") from error
        if stats.count <= 0 or stats.mean.shape != stats.m2.shape or stats.mean.ndim != 1 or stats.dim == 0:
            raise DatasetError(f"{where}: statistics are empty or inconsistent")
        if not (np.isfinite(stats.mean).all() and np.isfinite(stats.m2).all() and (stats.m2 >= 0).all()):
            raise DatasetError(
                f"{where}: statistics hold non-finite or negative values; they would corrupt every feature"
            )
        return stats


def read_stats(url: str) -> FeatureStats:
    """A ``stats.json`` at any fsspec URL (a dataset's, or one handed to ``--stats``), checked."""
    try:
        with fsspec.open(url, "rb") as handle:
            return FeatureStats.from_json(handle.read(), url)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{url}: statistics file not found") from error

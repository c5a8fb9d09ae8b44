"""Global per-coefficient feature statistics (cepstral mean and variance normalisation).

Statistics are kept as (frame count, mean, sum of squared deviations) in float64 and
combined with Chan et al.'s pairwise update, which is exact in real arithmetic: any split
of the data into parts (utterances, workers, machines) merges to the same result as one
pass, up to float64 rounding. The dataset's ``stats.json`` holds them, so that test data
met later is normalised exactly like the training data the model saw.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec
import numpy as np

from shards.errors import MissingInput
from shards.manifest import STATS, DatasetError

MIN_STD = 1e-8  # a constant coefficient is centred but not blown up
# The feature-shift rule (docs/design.md, "Feature shift"; measured by bench/feature_shift.py): n
# utterances are of another front end when some coefficient's mean lies more than a + b/sqrt(n)
# training standard deviations from the training mean (MEAN_OFFSET_LIMIT), or when the median over
# coefficients of |ln(std / training std)| exceeds a + b/sqrt(n) (SPREAD_LIMIT). One utterance is
# noisy (speaker, loudness, content), so the limits are loosest for one and tighten as n grows.
MEAN_OFFSET_LIMIT = (1.2, 0.8)
SPREAD_LIMIT = (0.3, 0.7)


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

    @classmethod
    def pooled(cls, parts: "Iterable[FeatureStats]", dim: int) -> "FeatureStats":
        """All ``parts`` merged in the order given (the order fixes the float64 rounding)."""
        total = cls.empty(dim)
        for part in parts:
            total = total.merge(part)
        return total

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

    def shift_from(self, expected: "FeatureStats", utterances: int) -> "FeatureShift":
        """How these statistics (new data's, over ``utterances``) sit against ``expected`` (training's)."""
        return FeatureShift(self, expected, utterances)

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
        except ValueError as error:
            raise DatasetError(f"{where}: not statistics ({error})") from error
        return cls.from_document(document, where)

    @classmethod
    def from_document(cls, document: dict, where: str) -> "FeatureStats":
        """The statistics of :meth:`document`'s dict (stats.json's, a model card's), checked."""
        try:
            stats = cls(
                int(document["frames"]),
                np.array(document["mean"], dtype=np.float64),
                np.array(document["m2"], dtype=np.float64),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{where}: not statistics ({error})") from error
        if stats.count <= 0 or stats.mean.shape != stats.m2.shape or stats.mean.ndim != 1 or stats.dim == 0:
            raise DatasetError(f"{where}: statistics are empty or inconsistent")
        if not (np.isfinite(stats.mean).all() and np.isfinite(stats.m2).all() and (stats.m2 >= 0).all()):
            raise DatasetError(
                f"{where}: statistics hold non-finite or negative values; they would corrupt every feature"
            )
        return stats


@dataclass(frozen=True)
class FeatureShift:
    """New data's statistics (``observed``, over ``utterances``) against the training data's."""

    observed: FeatureStats
    expected: FeatureStats
    utterances: int

    @property
    def mean_offset(self) -> np.ndarray:
        """|observed mean - expected mean| per coefficient, in expected standard deviations."""
        return np.abs(self.observed.mean - self.expected.mean) / self.expected.std

    @property
    def spread_log_ratio(self) -> np.ndarray:
        """ln(observed std / expected std) per coefficient."""
        return np.log(self.observed.std / self.expected.std)

    @property
    def spread(self) -> float:
        """The median over coefficients of |ln(observed std / expected std)|."""
        return float(np.median(np.abs(self.spread_log_ratio)))

    def _limit(self, rule: tuple[float, float]) -> float:
        return rule[0] + rule[1] / np.sqrt(max(self.utterances, 1))

    @property
    def is_shift(self) -> bool:
        return bool(
            self.mean_offset.max() > self._limit(MEAN_OFFSET_LIMIT) or self.spread > self._limit(SPREAD_LIMIT)
        )

    def describe(self, limit: int = 3) -> str:
        """What breaks the rule: the coefficients (the first ``limit``), observed against expected."""
        offset_limit, spread_limit = self._limit(MEAN_OFFSET_LIMIT), self._limit(SPREAD_LIMIT)
        beyond = self.mean_offset > offset_limit
        if self.spread > spread_limit:
            beyond |= np.abs(self.spread_log_ratio) > spread_limit
        named = [
            f"c{c} mean {self.observed.mean[c]:.3g} (expected {self.expected.mean[c]:.3g}), "
            f"std {self.observed.std[c]:.3g} (expected {self.expected.std[c]:.3g})"
            for c in np.flatnonzero(beyond)[:limit]
        ]
        more = int(beyond.sum()) - limit
        return "; ".join(named) + (f"; and {more} more coefficients" if more > 0 else "")


def read_stats(url: str) -> FeatureStats:
    """A ``stats.json`` at any fsspec URL (a dataset's, or one handed to ``--stats``), checked."""
    try:
        with fsspec.open(url, "rb") as handle:
            return FeatureStats.from_json(handle.read(), url)
    except FileNotFoundError as error:
        raise MissingInput(f"{url}: statistics file not found") from error


def read_dataset_stats(url: str) -> dict:
    """The dataset's ``stats.json`` (feature_dim, frames, mean, std, m2) as a dict, checked."""
    return read_stats(f"{url.rstrip('/')}/{STATS}").document()

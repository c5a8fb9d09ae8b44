import numpy as np
import pytest

from shards.stats import MIN_STD, FeatureStats


def _utterances(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(3, 2, size=(int(rng.integers(1, 300)), 13)).astype(np.float32) for _ in range(50)]


@pytest.mark.parametrize("parts", [1, 2, 7, 50])
def test_any_partition_merges_to_the_whole(parts):
    utterances = _utterances(0)
    everything = np.concatenate(utterances).astype(np.float64)
    groups = np.array_split(np.arange(len(utterances)), parts)
    partials = []
    for group in groups:
        partial = FeatureStats.empty(13)
        for i in group:
            partial = partial.merge(FeatureStats.of(utterances[i]))
        partials.append(partial)
    total = FeatureStats.empty(13)
    for partial in reversed(partials):  # merge order must not matter either
        total = total.merge(partial)
    assert total.count == len(everything)
    np.testing.assert_allclose(total.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(total.std, everything.std(axis=0), rtol=1e-12)


def test_constant_coefficient_is_centred_not_blown_up():
    features = np.ones((10, 2), dtype=np.float32)
    stats = FeatureStats.of(features)
    assert stats.std.tolist() == [MIN_STD, MIN_STD]
    assert np.all(stats.normalise(features) == 0)


def test_json_round_trip_is_exact():
    stats = FeatureStats.of(_utterances(1)[0])
    back = FeatureStats.from_json(stats.to_json(), "stats.json")
    assert back.count == stats.count
    assert np.array_equal(back.mean, stats.mean) and np.array_equal(back.m2, stats.m2)


def test_not_a_stats_file_is_named():
    with pytest.raises(ValueError, match="s3://b/stats.json: not statistics"):
        FeatureStats.from_json(b'{"mean": [1]}', "s3://b/stats.json")

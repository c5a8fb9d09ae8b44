"""The shard pipeline end to end on real files, locally and on the real S3 server."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.build import Settings, build
from pipeline.synthetic import LATER, write_hw3p2
from shards import manifest
from shards.manifest import DatasetError, read_split_metadata
from shards.reader import BatchStream
from shards.stats import FeatureStats
from shards.vocab import parse_transcript
from tests.outage import CuttableProxy
from tests.processes import REPO, pipeline_command, why_failed
from tests.throttle import throttling
from tests.written import read_index, read_split, s3_tree_bytes, tree_bytes


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(60, 12, 10), seed=1)


def _read_raw(root: Path, folders=("train", "dev", "test")) -> dict[str, dict[str, tuple]]:
    """split → id → (raw features, labels or None), read straight from the .npy files."""
    found = {}
    for split, folder in zip(("train", "dev", "test"), folders, strict=True):
        found[split] = {}
        for path in sorted((root / folder / "mfcc").glob("*.npy")):
            transcript = root / folder / "transcript" / path.name
            labels = parse_transcript(np.load(transcript), str(transcript)) if transcript.exists() else None
            found[split][path.stem] = (np.load(path), labels)
    return found


def _fetch_stats(url: str) -> FeatureStats:
    with fsspec.open(f"{url}/{manifest.STATS}", "rb") as handle:
        return FeatureStats.from_json(handle.read(), url)


def _assert_round_trip(raw_root: Path, dst: str, folders=("train", "dev", "test")) -> None:
    expected = _read_raw(raw_root, folders)
    stats = _fetch_stats(dst)
    train_frames = np.concatenate([f for f, _ in expected["train"].values()]).astype(np.float64)
    # Invariant: the statistics are numpy's over the whole training split
    np.testing.assert_allclose(stats.mean, train_frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, train_frames.std(axis=0), rtol=1e-12)
    for split, utterances in expected.items():
        stored = read_split(dst, split)
        # Invariant: every utterance is stored exactly once
        assert sorted(u.id for _, u in stored) == sorted(utterances)
        for _, utterance in stored:
            features, labels = utterances[utterance.id]
            # Invariant: features come back exactly as the published statistics normalise them
            assert utterance.features.dtype == np.float32
            assert np.array_equal(utterance.features, stats.normalise(features))
            if labels is None:
                assert utterance.labels is None
            else:
                assert utterance.labels.tolist() == labels


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_local(raw, tmp_path, workers):
    dst = tmp_path / "shards"
    build(Settings(str(raw), str(dst), workers=workers, shard_mb=0.2))
    _assert_round_trip(raw, str(dst))
    # Invariant: no staging leftovers in a finished dataset
    assert not (dst / ".staging").exists() and not list(dst.rglob(".parts"))


def test_round_trip_s3_to_s3(raw, s3_bucket):
    fs = fsspec.filesystem("s3")
    fs.put(str(raw), f"{s3_bucket}/raw", recursive=True)
    dst = f"{s3_bucket}/shards"
    build(Settings(f"{s3_bucket}/raw", dst, workers=2, shard_mb=0.2))
    _assert_round_trip(raw, dst)
    assert len(read_index(dst, "train").shards) > 1


def test_worker_count_does_not_change_a_byte(raw, tmp_path):
    build(Settings(str(raw), str(tmp_path / "one"), workers=1, shard_mb=0.2))
    build(Settings(str(raw), str(tmp_path / "two"), workers=2, shard_mb=0.2))
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")


def test_shards_are_length_sorted_and_indexed(raw, tmp_path):
    dst = tmp_path / "shards"
    build(Settings(str(raw), str(dst), shard_mb=0.1))
    for split in ("train", "dev", "test"):
        index = read_index(str(dst), split)
        stored = read_split(str(dst), split)
        lengths = [len(u.features) for _, u in stored]
        # Invariant: within and across shards, in key order, frame counts never decrease
        assert [key for key, _ in stored] == sorted(key for key, _ in stored)
        assert lengths == sorted(lengths)
        rows = manifest.read_manifest((dst / split / manifest.MANIFEST).read_bytes()).to_pylist()
        assert [r["id"] for r in rows] == [u.id for _, u in stored]
        assert [r["n_frames"] for r in rows] == lengths
        for entry in index.shards:
            data = (dst / split / entry.name).read_bytes()
            # Invariant: the index describes each shard's exact bytes and contents
            assert (entry.bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
            in_shard = [r for r in rows if r["shard"] == entry.name]
            assert entry.utterances == len(in_shard)
            assert entry.frames == sum(r["n_frames"] for r in in_shard)
            assert (entry.min_frames, entry.max_frames) == (in_shard[0]["n_frames"], in_shard[-1]["n_frames"])
        assert index.totals()["utterances"] == len(stored)
        assert index.feature_dim == 13
    assert len(read_index(str(dst), "train").shards) >= 3
    # Invariant: the test split keeps its submission order
    order = (dst / "test" / manifest.ORDER).read_text().split()
    assert order == ["id"] + [f"te{i:05d}" for i in reversed(range(10))]


def test_later_semester_layout(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(20, 5, 5), variant=LATER, seed=3)
    build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=1))
    _assert_round_trip(raw, str(tmp_path / "shards"), folders=LATER[:3])


def test_every_training_folder_of_a_layout_is_read_and_each_utterance_names_its_folder(tmp_path, caplog):
    raw = write_hw3p2(
        tmp_path / "raw", (20, 5, 5), variant=LATER, seed=3, more_train=(("train-clean-360", 11),)
    )
    for part in ("mfcc", "transcript"):  # an id in both training folders: kept in the first
        shutil.copy(raw / "train-clean-100" / part / "tr00003.npy", raw / "train-clean-360" / part)
    (raw / "notes").mkdir()  # a folder that is no split
    (raw / "train-other-500").mkdir()  # a training folder without features
    with caplog.at_level("WARNING", logger="pipeline"):
        build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=1))
    rows = {r["id"]: r for r in read_split_metadata(str(tmp_path / "shards"), "train")[1]}
    from_360 = sorted(i for i, r in rows.items() if r["source"] == "train-clean-360")
    assert len(rows) == 20 + 11 and from_360 == [f"360-{n:05d}" for n in range(11)]
    assert rows["tr00003"]["source"] == "train-clean-100"
    assert {r["source"] for r in read_split_metadata(str(tmp_path / "shards"), "dev")[1]} == {"dev-clean"}
    (clash,) = manifest.read_rejects((tmp_path / "shards" / manifest.REJECTS).read_bytes(), "rejects")
    assert (clash.split, clash.id, clash.file) == ("train", "tr00003", "train-clean-360/mfcc/tr00003.npy")
    assert "also in train-clean-100/ (kept there)" in clash.reason
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{raw}/notes/: not read (not a split folder of the HW3P2 layout)" in warnings
    assert f"{raw}/train-other-500/: not read (no mfcc/ folder in it)" in warnings
    only = BatchStream(str(tmp_path / "shards"), "train", sources=("train-clean-360",))
    planned = [u.id for batch in only.plan().rank_batches(0) for u in batch.utterances]
    assert sorted(planned) == from_360 and len(only.rows) == 11
    with pytest.raises(DatasetError, match=r"no utterance from \['train-clean-500'\]; its sources are"):
        BatchStream(str(tmp_path / "shards"), "train", sources=("train-clean-500",))


def test_existing_statistics_are_applied_to_new_data(raw, tmp_path):
    build(Settings(str(raw), str(tmp_path / "first"), shard_mb=1))
    new = write_hw3p2(tmp_path / "new", counts=(0, 0, 6), seed=9, front_end_seed=1)  # raw's front end
    for folder in ("train", "dev"):  # new test data alone, no training split to compute from
        shutil.rmtree(new / folder)
    stats_url = str(tmp_path / "first" / manifest.STATS)
    build(Settings(str(new), str(tmp_path / "second"), stats=stats_url))
    stats = _fetch_stats(str(tmp_path / "first"))
    assert (tmp_path / "second" / manifest.STATS).read_bytes() == (
        tmp_path / "first" / manifest.STATS
    ).read_bytes()
    for _, utterance in read_split(str(tmp_path / "second"), "test"):
        raw_features = np.load(new / "test" / "mfcc" / f"{utterance.id}.npy")
        assert np.array_equal(utterance.features, stats.normalise(raw_features))


def test_command_line_prints_summary(raw, tmp_path):
    result = subprocess.run(
        pipeline_command(raw, tmp_path / "out", "--workers", "1"), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr  # not a terminal: progress as log lines, no tqdm bar
    assert (
        "train: kept 60, rejected 0 (0.0%) | dev: kept 12, rejected 0 (0.0%) | test: kept 10" in result.stdout
    )


def test_missing_source_is_a_clear_error(tmp_path):
    result = subprocess.run(
        pipeline_command(tmp_path / "nowhere", tmp_path / "out"), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere'}: no HW3P2 split found" in result.stderr


def test_shards_read_back_with_webdataset(raw, tmp_path):
    import webdataset as wds

    dst = tmp_path / "shards"
    build(Settings(str(raw), str(dst), shard_mb=1))
    urls = [str(dst / "train" / entry.name) for entry in read_index(str(dst), "train").shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    # Invariant: webdataset groups each sample's members under its key, with the id inside
    assert [s["__key__"] for s in samples] == [key for key, _ in read_split(str(dst), "train")]
    assert sorted(s["id.txt"].decode() for s in samples) == sorted(
        p.stem for p in (raw / "train/mfcc").glob("*.npy")
    )
    assert all({"feats.npy", "labels.npy"} <= s.keys() for s in samples)


def test_a_source_that_goes_away_during_the_scan_fails_the_run_and_rejects_nothing(
    raw, s3_server, s3_bucket, tmp_path
):
    """Its utterances are not bad: an unreachable store is one error line, never a rejects.csv of them all."""
    fsspec.filesystem("s3").put(str(raw), f"{s3_bucket}/raw", recursive=True)
    proxy = CuttableProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    proxy.down_on(f"GET /{s3_bucket.removeprefix('s3://')}/raw/train/mfcc/".encode())
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    dst = tmp_path / "shards"
    command = pipeline_command(f"{s3_bucket}/raw", dst, "--workers", "1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 2, why_failed(result.stderr)
    assert result.stderr.splitlines()[-1] == (
        f"error: {s3_bucket}/raw: cannot reach the S3 endpoint {proxy.endpoint}: is the server running and the address right?"
    )
    assert not (dst / manifest.REJECTS).exists()


def test_a_store_that_answers_slow_down_is_retried_and_counted(raw, s3_server, s3_bucket, tmp_path):
    """Every tenth request answered 503 SlowDown (a store past its request rate): the same bytes as
    a run it never pushed back on, and the summary counts every refusal the proxy made."""
    fs = fsspec.filesystem("s3")
    fs.put(str(raw), f"{s3_bucket}/raw", recursive=True)
    build(Settings(str(raw), str(tmp_path / "clean"), shard_mb=0.2))
    with throttling(int(s3_server.endpoint.rsplit(":", 1)[1]), every=10) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint}
        command = pipeline_command(
            f"{s3_bucket}/raw", f"{s3_bucket}/shards", "--workers", "2", "--shard-mb", "0.2"
        )
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, why_failed(result.stderr)
    assert proxy.refused >= 20
    assert (
        f"| the store answered 503 SlowDown {proxy.refused} times, retried → {s3_bucket}/shards"
        in result.stdout
    )
    assert s3_tree_bytes(f"{s3_bucket}/shards") == tree_bytes(tmp_path / "clean")

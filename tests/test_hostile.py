"""Fuzzing: hundreds of randomly damaged .npy files and shards go through the pipeline and the reader.

No crash, no hang (each test is bounded by a timeout), every input utterance accounted for in
shards + rejects.csv, and a damaged shard is either read as well-formed samples or refused as
CorruptShard — never another exception. Seeds are fixed, so a failure reproduces.
"""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards import manifest
from shards.manifest import read_split_metadata
from shards.reader import BatchStream
from shards.shard_file import CorruptShard, read_shard
from tests.processes import pipeline_command, why_failed
from tests.written import read_split


def _damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """One random kind of damage: bit flips, a truncation, a header edit, appended garbage, a splice."""
    kind = rng.integers(5)
    data = bytearray(data)
    if kind == 0:
        for position in rng.integers(len(data), size=rng.integers(1, 9)):
            data[position] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del data[rng.integers(len(data)) :]
    elif kind == 2:  # inside the first 128 bytes: .npy header (shape, dtype) or tar member header
        for position in rng.integers(min(128, len(data)), size=rng.integers(1, 5)):
            data[position] = int(rng.integers(256))
    elif kind == 3:
        data += rng.bytes(int(rng.integers(1, 600)))
    else:
        start = int(rng.integers(len(data)))
        data[start : start + 16] = rng.bytes(16)
    return bytes(data)


@pytest.mark.timeout(300)
def test_randomly_damaged_npy_files_are_each_kept_or_rejected(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(300, 20, 20), frames=(40, 120), seed=41)
    rng = np.random.default_rng(41)
    damaged = set()
    for split in ("train", "dev"):
        for path in sorted((raw / split / "mfcc").glob("*.npy"))[: 250 if split == "train" else 15]:
            folder = "transcript" if rng.random() < 0.3 else "mfcc"
            target = raw / split / folder / path.name
            target.write_bytes(_damaged(target.read_bytes(), rng))
            damaged.add(path.stem)
    for path in sorted((raw / "test" / "mfcc").glob("*.npy"))[:15]:
        path.write_bytes(_damaged(path.read_bytes(), rng))
        damaged.add(path.stem)
    dst = tmp_path / "shards"
    summary = build(Settings(str(raw), str(dst), max_reject_fraction=1.0, shard_mb=0.2))
    rejects = list(csv.DictReader(io.StringIO((dst / manifest.REJECTS).read_text(), newline="")))
    assert all(row["reason"] for row in rejects)
    for split, count in (("train", 300), ("dev", 20), ("test", 20)):
        kept = [u for _, u in read_split(str(dst), split)]
        rejected = {row["id"] for row in rejects if row["split"] == split}
        # Invariant: every input utterance is in a shard or in rejects.csv, exactly once
        assert len(kept) + len(rejected) == count
        assert not {u.id for u in kept} & rejected
        # Invariant: what was kept is sane, whatever the damage
        assert all(np.isfinite(u.features).all() and np.abs(u.features).max() < 1e4 for u in kept)
    stats = json.loads((dst / manifest.STATS).read_text())
    assert np.isfinite(stats["std"]).all() and min(stats["std"]) > 1e-3  # nothing poisoned them
    assert sum(s.rejected for s in summary.splits) >= len(damaged) // 3  # the damage was real


@pytest.mark.timeout(300)
def test_randomly_damaged_shards_are_read_or_refused_never_crash(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(40, 5, 5), frames=(40, 120), seed=42)
    dst = tmp_path / "shards"
    build(Settings(str(raw), str(dst), shard_mb=0.05))
    index, rows = read_split_metadata(str(dst), "train")
    rng = np.random.default_rng(42)
    outcomes = {"read": 0, "refused": 0}
    for trial in range(300):
        entry = index.shards[trial % len(index.shards)]
        keys = {r["key"] for r in rows if r["shard"] == entry.name}
        original = (dst / "train" / entry.name).read_bytes()
        damaged = _damaged(original, rng)
        victim = tmp_path / "victim.tar"
        victim.write_bytes(damaged)
        # half the time the index vouches for the damaged bytes (a forged or stale index.json)
        vouched = trial % 2 == 1
        if vouched:
            entry = manifest.ShardEntry(
                **{**entry.__dict__, "bytes": len(damaged), "sha256": hashlib.sha256(damaged).hexdigest()}
            )
        try:
            samples = read_shard(str(victim), entry, keys, deadline_s=0)
        except CorruptShard:
            outcomes["refused"] += 1
            continue
        # Invariant: unvouched damage is always refused; what is read is well-formed
        assert vouched or damaged == original
        assert set(samples) == keys
        assert all(s.features.dtype == np.float32 and s.features.ndim == 2 for s in samples.values())
        outcomes["read"] += 1
    assert outcomes["refused"] > 150 and outcomes["read"] > 0
    os.remove(tmp_path / "victim.tar")


def test_non_utf8_file_names_are_rejected_and_reported_visibly(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(10, 0, 0), seed=43)
    good = sorted((raw / "train" / "mfcc").glob("*.npy"))[0]
    name = os.fsdecode(b"caf\xe9")  # a Latin-1 file name: not UTF-8
    for folder in ("mfcc", "transcript"):
        (raw / "train" / folder / good.name).rename(raw / "train" / folder / f"{name}.npy")
    build(Settings(str(raw), str(tmp_path / "shards"), max_reject_fraction=1.0))
    rejects = (tmp_path / "shards" / manifest.REJECTS).read_text()
    assert "caf\\udce9" in rejects and "non-UTF-8" in rejects
    assert len(read_split(str(tmp_path / "shards"), "train")) == 9
    assert Path(tmp_path / "shards" / "train" / manifest.INDEX).exists()


@pytest.mark.parametrize(
    "document",
    [
        {"frames": 10, "mean": [0.0] * 13, "m2": [float("inf")] * 13},
        {"frames": 10, "mean": [0.0] * 13, "m2": [-1.0] * 13},
        {"frames": 10, "mean": [float("nan")] * 13, "m2": [1.0] * 13},
    ],
)
def test_a_poisoned_stats_file_is_refused(tmp_path, document):
    raw = write_hw3p2(tmp_path / "raw", counts=(4, 2, 2), seed=44)
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(document))
    command = pipeline_command(raw, tmp_path / "out", "--stats", str(stats))
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {stats}: statistics hold non-finite or negative values" in result.stderr


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_damaged_shard_reaches_the_caller_as_its_own_error_from_a_loader_worker_too(tmp_path, num_workers):
    """The reader's error is the caller's to report: the same type and one-line message whether a
    loader worker met it or the main process did (torch would paste the worker's traceback in)."""
    raw = write_hw3p2(tmp_path / "raw", counts=(12, 3, 2), frames=(40, 120), seed=46)
    build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=0.05))
    victim = sorted((tmp_path / "shards" / "train").glob("shard-*.tar"))[1]
    victim.write_bytes(victim.read_bytes()[:700])
    with pytest.raises(CorruptShard) as caught:
        list(BatchStream(str(tmp_path / "shards"), "train", num_workers=num_workers))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{victim}:") and "index.json says" in message


def _damage_a_shard(dst: Path) -> tuple[Path, str]:
    victim = sorted((dst / "train").glob("shard-*.tar"))[0]
    victim.write_bytes(_damaged(victim.read_bytes(), np.random.default_rng(0)) + b"x")
    return victim, "index.json says"


def _poison_the_stats(dst: Path) -> tuple[Path, str]:
    victim = dst / manifest.STATS
    document = json.loads(victim.read_text())
    victim.write_text(json.dumps(document | {"mean": [float("nan")] * document["feature_dim"]}))
    return victim, "statistics hold non-finite or negative values"


@pytest.mark.parametrize("damage", [_damage_a_shard, _poison_the_stats], ids=["shard", "stats"])
def test_training_on_damaged_data_is_one_line_naming_it(tmp_path, damage):
    raw = write_hw3p2(tmp_path / "raw", counts=(12, 3, 2), frames=(40, 120), seed=45)
    build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=0.05))
    victim, message = damage(tmp_path / "shards")
    command = [
        sys.executable,
        "-m",
        "train.main",
        "--data",
        str(tmp_path / "shards"),
        "--out",
        str(tmp_path / "run"),
    ]
    result = subprocess.run(
        [*command, "epochs=1", "num_workers=0", "channels=8", "lstm_layers=1"], capture_output=True, text=True
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, why_failed(result.stderr)
    assert len(errors) == 1 and f"{victim}:" in errors[0] and message in errors[0], errors

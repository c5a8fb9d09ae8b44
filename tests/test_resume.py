"""Killed at any moment, a rerun finishes the job and gives exactly the bytes of a clean run."""

import io
import shutil
import signal
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from tests.processes import kill_when, pipeline_command, run_killed, why_failed
from tests.written import s3_tree_bytes, tree_bytes


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(400, 150, 100), seed=4)


def _command(raw: Path, dst: Path | str, shard_mb: str = "0.05", workers: int = 2) -> list[str]:
    return pipeline_command(raw, dst, "--workers", str(workers), "--shard-mb", shard_mb)


@pytest.mark.parametrize(
    ("moment", "expect_finished_shards"),
    [
        pytest.param("after os.rename */rejects.csv", False, id="after-scan"),
        pytest.param("after os.rename */train/shard-000002.tar", True, id="mid-train"),
        pytest.param("after os.rename */dev/index.json", True, id="after-dev"),
    ],
)
def test_kill_9_then_rerun_equals_a_clean_run(raw, tmp_path, moment, expect_finished_shards):
    """kill -9 (every process) just after a given file is published, in whichever worker publishes it."""
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    subprocess.run(_command(raw, clean), check=True, capture_output=True)
    killed = run_killed(_command(raw, resumed), resumed, moment)
    assert killed.returncode == -signal.SIGKILL, why_failed(killed.stderr)
    # Invariant: whatever is under a final shard name is a whole, readable tar
    for shard in resumed.rglob("shard-*.tar"):
        with tarfile.open(shard) as archive:
            kinds = Counter(member.name.split(".", 1)[1] for member in archive.getmembers())
        assert kinds["feats.npy"] == kinds["id.txt"] > 0
        assert kinds["labels.npy"] in (0, kinds["feats.npy"])
    assert not (resumed / "test" / "index.json").exists()
    finished = [mark.parent.parent / mark.stem for mark in resumed.glob("*/.parts/shard-*.tar.json")]
    finished += [
        shard for index in resumed.glob("*/index.json") for shard in index.parent.glob("shard-*.tar")
    ]
    assert bool(finished) == expect_finished_shards
    inodes = {shard: shard.stat().st_ino for shard in finished}
    subprocess.run(_command(raw, resumed), check=True, capture_output=True)
    assert tree_bytes(resumed) == tree_bytes(clean)
    # Invariant: shards finished before the kill are kept, not written again
    assert {shard: shard.stat().st_ino for shard in finished} == inodes


def test_kill_9_on_s3_then_rerun_equals_a_clean_run(raw, s3_bucket):
    clean, resumed = f"{s3_bucket}/clean", f"{s3_bucket}/resumed"
    subprocess.run(_command(raw, clean), check=True, capture_output=True)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)

    def shards_visible() -> list[str]:
        fs.invalidate_cache()
        return fs.glob(f"{resumed}/train/shard-*.tar")

    kill_when(_command(raw, resumed), lambda: len(shards_visible()) >= 3)
    for shard in shards_visible():
        # Invariant: an object under a final shard name is a whole tar (uploads publish atomically)
        with tarfile.open(fileobj=io.BytesIO(fs.cat_file(shard))) as archive:
            assert len(archive.getmembers()) % 3 == 0
    subprocess.run(_command(raw, resumed), check=True, capture_output=True)
    assert s3_tree_bytes(resumed) == s3_tree_bytes(clean)


def test_rerun_with_other_settings_replaces_the_old_shards(raw, tmp_path):
    then_large, large = tmp_path / "then_large", tmp_path / "large"
    build(Settings(str(raw), str(then_large), shard_mb=0.05))
    assert len(list((then_large / "train").glob("shard-*.tar"))) > 5
    build(Settings(str(raw), str(then_large), shard_mb=2))
    build(Settings(str(raw), str(large), shard_mb=2))
    # Invariant: no shard of the earlier layout survives; the result is a clean run's
    assert tree_bytes(then_large) == tree_bytes(large)


def _scale_one_train_utterance(raw: Path) -> None:
    features = sorted((raw / "train" / "mfcc").glob("*.npy"))[0]
    np.save(features, np.load(features, allow_pickle=False) * 1.5)


@pytest.mark.parametrize(
    ("shard_mb", "change_inputs"),
    [
        pytest.param("0.08", None, id="other-shard-size"),
        pytest.param("0.05", _scale_one_train_utterance, id="changed-features"),
    ],
)
def test_a_run_killed_mid_split_then_rerun_on_changed_work_rewrites_the_shards_it_marked(
    raw, tmp_path, shard_mb, change_inputs
):
    """The done-marks a killed run left are for its own work: a rerun with other settings or
    inputs must not keep their shards, which have the same names but other contents."""
    source, resumed, clean = tmp_path / "raw", tmp_path / "resumed", tmp_path / "clean"
    shutil.copytree(raw, source)
    # one worker: shards 0 and 1 are marked done before shard 2 is published, whatever the timing
    # (with two, the other worker may still be writing its shard when the kill lands)
    killed = run_killed(
        _command(source, resumed, workers=1), resumed, "after os.rename */train/shard-000002.tar"
    )
    assert killed.returncode == -signal.SIGKILL, why_failed(killed.stderr)
    assert len(list(resumed.glob("train/.parts/shard-*.tar.json"))) >= 2
    if change_inputs:
        change_inputs(source)
    subprocess.run(_command(source, resumed, shard_mb), check=True, capture_output=True)
    subprocess.run(_command(source, clean, shard_mb), check=True, capture_output=True)
    assert tree_bytes(resumed) == tree_bytes(clean)

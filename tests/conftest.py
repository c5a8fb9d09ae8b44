"""The fixtures many test files share: a real S3 server and its buckets, a tiny trained model."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from loopback.s3 import running_s3_server
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from tests.processes import REPO
from train.checkpoint import epoch_folder


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on loopback for the whole session; clients find it via the environment."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        saved = {key: os.environ.get(key) for key in server.client_env()}
        os.environ.update(server.client_env())
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket: ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[str, str, Path]:
    """A tiny model trained for one epoch on random HW3P2-layout data, with a test solution file."""
    root = tmp_path_factory.mktemp("eval")
    raw = write_hw3p2(root / "raw", counts=(30, 8, 9), frames=(60, 200), seed=21)
    build(Settings(str(raw), str(root / "shards"), shard_mb=0.1))
    run = root / "runs" / "tiny"
    command = [
        sys.executable,
        str(REPO / "train" / "main.py"),
        "--data",
        str(root / "shards"),
        "--out",
        str(run),
    ]
    command += [
        "channels=16",
        "lstm_layers=1",
        "lstm_hidden=16",
        "classifier_hidden=32",
        "epochs=1",
        "num_workers=0",
    ]
    subprocess.run(command, check=True, capture_output=True)
    solution = root / "solution.csv"
    solution.write_text("id,label\n" + "".join(f"{k},.ab.\n" for k in range(9)))  # Kaggle's: positions
    return str(root / "shards"), str(run / epoch_folder(0) / "model.pt"), solution


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> str:
    """A dataset of 48 train, 8 dev and 4 test utterances of 60-300 frames, in 0.2 MB shards."""
    raw = write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(48, 8, 4), frames=(60, 300), seed=12)
    dst = tmp_path_factory.mktemp("shards")
    build(Settings(str(raw), str(dst), shard_mb=0.2))
    return str(dst)

"""The pipeline on a real Dask cluster on 127.0.0.1: the same bytes as one local worker, a lost worker
costs nothing, and nothing listens beyond loopback.

The cluster is what a user starts on their machines: ``dask scheduler`` and ``dask worker``
processes (not an in-process LocalCluster), bound to 127.0.0.1, dashboards included.
"""

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import fsspec
import psutil
import pytest

from loopback.cluster import Cluster, dask_cluster
from loopback.ports import free_port
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from tests.processes import REPO, pipeline_command, run_killed, why_failed
from tests.throttle import throttling
from tests.written import s3_tree_bytes, tree_bytes

SHARD_MB = 0.1


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(240, 40, 40), frames=(60, 300), seed=21)


@pytest.fixture(scope="module")
def one_worker(raw, tmp_path_factory) -> dict[str, bytes]:
    """The reference: the dataset one local worker writes."""
    dst = tmp_path_factory.mktemp("one") / "shards"
    build(Settings(str(raw), str(dst), workers=1, shard_mb=SHARD_MB))
    return tree_bytes(dst)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory) -> Iterator[Cluster]:
    """Two workers (and the S3 test server's address and keys in their environment)."""
    with dask_cluster(tmp_path_factory.mktemp("cluster"), None, None) as started:
        yield started


def _pipeline(src: str, dst: str, *placement: str) -> subprocess.CompletedProcess:
    command = pipeline_command(src, dst, "--shard-mb", str(SHARD_MB), *placement)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_a_cluster_writes_the_bytes_one_local_worker_writes(raw, one_worker, cluster, tmp_path):
    on_cluster = _pipeline(
        str(raw), str(tmp_path / "shards"), "--scheduler-file", str(cluster.scheduler_file)
    )
    assert on_cluster.returncode == 0, why_failed(on_cluster.stderr)
    assert tree_bytes(tmp_path / "shards") == one_worker
    assert len([name for name in one_worker if name.startswith("train/shard-")]) >= 4
    # the driver says what a local run says (log lines and summary), and the cluster's size
    local = _pipeline(str(raw), str(tmp_path / "local"), "--workers", "1")
    cluster_line = f"pipeline: cluster {cluster.address}: 2 worker(s)"
    assert _messages(on_cluster.stderr) == [*_messages(local.stderr), cluster_line]
    assert on_cluster.stdout == local.stdout.replace(str(tmp_path / "local"), str(tmp_path / "shards"))
    assert on_cluster.stdout.startswith("done: train: kept 240, rejected 0 (0.0%) | dev: kept 40")


def _messages(log: str) -> list[str]:
    """Log lines without their time stamps."""
    return [line.split(" ", 2)[2] for line in log.splitlines()]


def test_a_cluster_writes_the_same_bytes_from_s3_to_s3(raw, one_worker, cluster, s3_bucket):
    fs = fsspec.filesystem("s3")
    fs.put(str(raw), f"{s3_bucket}/raw", recursive=True)
    result = _pipeline(f"{s3_bucket}/raw", f"{s3_bucket}/shards", "--scheduler", cluster.address)
    assert result.returncode == 0, why_failed(result.stderr)
    assert s3_tree_bytes(f"{s3_bucket}/shards") == one_worker


def test_nothing_the_cluster_runs_listens_beyond_loopback(cluster):
    """Scheduler, nannies, workers and their dashboards: every listening socket is on 127.0.0.1."""
    processes = [psutil.Process(p.pid) for p in (cluster.scheduler, *cluster.workers)]
    processes += [child for p in list(processes) for child in p.children(recursive=True)]
    listening = [
        (c.laddr.ip, c.laddr.port, p.pid)
        for p in processes
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert int(cluster.address.rsplit(":", 1)[1]) in {port for _, port, _ in listening}
    assert (
        len({pid for *_, pid in listening}) >= 5
    )  # the scheduler, and per worker command its nanny and worker
    assert {ip for ip, *_ in listening} == {"127.0.0.1"}, listening


def test_a_worker_killed_after_publishing_a_shard_costs_nothing(raw, one_worker, tmp_path):
    """kill -9 of one worker command (its nanny and worker process) just after it published a shard,
    before its done-mark: Dask re-runs the task on the other worker, which writes the same bytes."""
    dst = tmp_path / "shards"
    killpoint = {
        "KILLPOINT_FOLDER": str(dst),
        "KILLPOINT": "after os.rename */train/shard-*.tar",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "tests" / "killpoint"), os.environ.get("PYTHONPATH")])
        ),
    }
    with dask_cluster(tmp_path / "cluster", killpoint, None) as started:
        result = _pipeline(str(raw), str(dst), "--scheduler-file", str(started.scheduler_file))
        killed = started.workers[0].wait(timeout=60)
    assert killed == -signal.SIGKILL, "the hooked worker was not killed"
    assert result.returncode == 0, why_failed(result.stderr)
    assert tree_bytes(dst) == one_worker


def test_a_driver_killed_mid_run_is_resumed_by_the_same_command_on_another_cluster_size(
    raw, one_worker, cluster, tmp_path
):
    """Killed just after it published dev's manifest (train complete, dev's shards marked done): the
    rerun, on one local worker instead of the two-worker cluster, rewrites nothing that was done."""
    dst = tmp_path / "shards"
    command = pipeline_command(raw, dst, "--shard-mb", str(SHARD_MB))
    killed = run_killed(
        [*command, "--scheduler-file", str(cluster.scheduler_file)],
        dst,
        "after os.rename */dev/manifest.parquet",
    )
    assert killed.returncode == -signal.SIGKILL, why_failed(killed.stderr)
    assert not (dst / "dev" / "index.json").exists() and (dst / "train" / "index.json").exists()
    done = {path: (dst / path).stat().st_mtime_ns for path in tree_bytes(dst) if path.endswith(".tar")}
    assert any(path.startswith("dev/") for path in done)
    resumed = subprocess.run([*command, "--workers", "1"], capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, why_failed(resumed.stderr)
    assert tree_bytes(dst) == one_worker
    assert {path: (dst / path).stat().st_mtime_ns for path in done} == done  # not written again


def test_a_worker_that_cannot_reach_the_store_fails_the_run_naming_it_and_the_url(
    raw, s3_server, s3_bucket, tmp_path
):
    """The driver reaches the S3 server; the worker's machine is given a wrong endpoint."""
    fsspec.filesystem("s3").put(str(raw), f"{s3_bucket}/raw", recursive=True)
    unreachable = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    with dask_cluster(tmp_path / "cluster", unreachable) as started:
        address = _worker_addresses(started)[0]
        result = _pipeline(f"{s3_bucket}/raw", f"{s3_bucket}/shards", "--scheduler", started.address)
    assert result.returncode == 2, why_failed(result.stderr)
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: on worker {address}: s3://"), error
    assert f"cannot reach the S3 endpoint {unreachable['AWS_ENDPOINT_URL']}" in error


def _worker_addresses(started: Cluster) -> list[str]:
    from distributed import Client

    with Client(scheduler_file=str(started.scheduler_file)) as client:
        return list(client.scheduler_info(n_workers=-1)["workers"])


@pytest.mark.slow  # the CI set holds the guarantee with local worker processes (tests/test_pipeline.py)
def test_a_store_that_answers_slow_down_to_the_workers_is_retried_and_counted(
    raw, one_worker, s3_server, s3_bucket, tmp_path
):
    """Every tenth request of the driver and of both workers answered 503 SlowDown: the same bytes,
    and the driver's summary counts the refusals its workers got too."""
    fs = fsspec.filesystem("s3")
    fs.put(str(raw), f"{s3_bucket}/raw", recursive=True)
    with throttling(int(s3_server.endpoint.rsplit(":", 1)[1]), every=10) as proxy:
        busy = {"AWS_ENDPOINT_URL": proxy.endpoint}
        with dask_cluster(tmp_path / "cluster", busy, busy) as started, pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            result = _pipeline(f"{s3_bucket}/raw", f"{s3_bucket}/shards", "--scheduler", started.address)
    assert result.returncode == 0, why_failed(result.stderr)
    assert proxy.refused >= 20
    assert f"| the store answered 503 SlowDown {proxy.refused} times, retried → " in result.stdout
    assert s3_tree_bytes(f"{s3_bucket}/shards") == one_worker


@pytest.mark.slow  # the client waits CLUSTER_WAIT_S (60 s) for the scheduler before it gives up
def test_a_scheduler_nobody_runs_is_one_line_naming_it(raw, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    result = _pipeline(str(raw), str(tmp_path / "shards"), "--scheduler", address)
    assert result.returncode == 2, why_failed(result.stderr)
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot reach the Dask scheduler at {address}: ")
    assert not (tmp_path / "shards").exists()

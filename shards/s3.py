"""What an object-store failure means, in one line a user can act on.

botocore and s3fs report a wrong secret, an unknown key, a missing bucket or an unreachable
endpoint as tracebacks of several types. :func:`explain` turns them into one line naming the
URL, what failed and what to check — never a secret — and every command prints that line and
exits 2. :func:`check_access` makes a destination fail before hours of work, not after.

A store that is merely busy answers ``503 SlowDown`` (S3, past about 3,500 writes or 5,500 reads
a second per prefix): botocore retries those with backoff, then s3fs does. :func:`count_throttling`
counts every such answer an S3 client of this process gets (:func:`throttled`), for the summaries
that say how often the store pushed back.
"""

import os
import threading

import botocore.exceptions
import fsspec

from shards.errors import UserError, write_error_lines
from shards.retry import StillFailing

ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"


def _endpoint() -> str:
    endpoint = os.environ.get(ENDPOINT_VARIABLE)
    if endpoint:
        return endpoint
    return (
        f"Amazon S3 ({ENDPOINT_VARIABLE} is not set; for another S3 server such as MinIO, SeaweedFS "
        f"or Ceph set {ENDPOINT_VARIABLE}=http://host:port)"
    )


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _problem(error: BaseException) -> str | None:
    text = str(error)
    lowered = text.lower()
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if isinstance(error, botocore.exceptions.ConnectionError | botocore.exceptions.ConnectTimeoutError):
        return f"cannot reach the S3 endpoint {_endpoint()}: is the server running and the address right?"
    if isinstance(error, PermissionError):
        if "signature" in lowered:
            return f"{_endpoint()} refused the secret key: check AWS_SECRET_ACCESS_KEY"
        if "access key" in lowered:
            return f"{_endpoint()} does not know the access key: check AWS_ACCESS_KEY_ID"
        return f"access denied by {_endpoint()}: check the credentials and the bucket's permissions"
    if isinstance(error, FileNotFoundError) and "bucket does not exist" in lowered:
        return f"the bucket does not exist at {_endpoint()}: create it, or check the URL"
    return None


def explain(error: BaseException, urls: list[str | None]) -> str | None:
    """One line for an object-store failure behind ``error``, or None if it is something else."""
    remote = [url for url in urls if url and url.startswith("s3://")]
    if not remote:
        return None
    problem = next(filter(None, map(_problem, _chain(error))), None)
    retried = next((e for e in _chain(error) if isinstance(e, StillFailing)), None)
    if retried is not None:  # an outage outlasted the deadline: which URL, for how long, and why
        return str(StillFailing(retried.url, retried.waited_s, problem or retried.reason))
    return f"{', '.join(remote)}: {problem}" if problem else None


def carried(error: BaseException) -> BaseException:
    """``error`` as it can cross a process boundary (pickled, without its causes): an exhausted
    retry keeps its explanation."""
    if isinstance(error, StillFailing):
        problem = next(filter(None, map(_problem, _chain(error))), None)
        return StillFailing(error.url, error.waited_s, problem or error.reason)
    return error


def refusal(error: BaseException, urls: list[str | None]) -> str | None:
    """The one line a command prints before exiting 2: an object-store failure explained (which of
    ``urls``, and why), or the message of an error a user can fix (``shards/errors.py``: the family,
    a missing file, an outage past its retries); None means a bug, which the command re-raises so
    that its traceback shows."""
    family = isinstance(error, UserError | FileNotFoundError | StillFailing)
    return explain(error, urls) or (str(error) if family else None)


def refused(error: BaseException, urls: list[str | None]) -> int:
    """Exit status 2 with the error's one line written (:func:`refusal`), or ``error`` raised
    again with its traceback when it is a bug. A command's ``except Exception`` ends with it."""
    message = refusal(error, urls)
    if message is None:
        raise error
    write_error_lines([message])
    return 2


_throttled = 0
_throttled_lock = threading.Lock()


def count_throttling(url: str) -> None:
    """From now on, count the 503 answers the S3 client behind ``url`` gets (local: nothing)."""
    if not url.startswith("s3://"):
        return
    fs, _ = fsspec.core.url_to_fs(url)  # the instance every caller of this thread shares
    if getattr(fs, "_counts_throttling", False):
        return
    fs.connect()
    fs.s3.meta.events.register("needs-retry.s3", _count_if_throttled)  # asked of every answer
    fs._counts_throttling = True


def _count_if_throttled(response=None, **_) -> None:
    global _throttled
    if response is not None and response[0].status_code == 503:
        with _throttled_lock:
            _throttled += 1


def throttled() -> int:
    """503 answers counted in this process so far."""
    return _throttled


def check_access(url: str) -> None:
    """Raise what a first request to ``url``'s bucket raises (credentials, bucket, endpoint); local: nothing."""
    if url.startswith("s3://"):
        fs, path = fsspec.core.url_to_fs(url)
        fs.ls(path.split("/", 1)[0])

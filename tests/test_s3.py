"""shards/s3.py: an object-store failure, however botocore and s3fs raise it, becomes one line naming
the URL, what failed and what to check (the real server's answers: test_s3_errors.py)."""

import pickle
import subprocess
import sys
from types import SimpleNamespace

import botocore.exceptions
import pytest

from shards import s3
from shards.errors import UserError
from shards.retry import StillFailing

URLS = ["s3://bucket/shards", "demo/run", None]


@pytest.fixture(autouse=True)
def _endpoint(monkeypatch):
    monkeypatch.setenv(s3.ENDPOINT_VARIABLE, "http://127.0.0.1:9000")


def _raised_from(cause: BaseException, outer: BaseException, explicitly: bool = True) -> BaseException:
    """``outer`` as s3fs raises it: with ``cause`` behind it (``raise ... from``, or raised while
    handling it)."""
    try:
        try:
            raise cause
        except BaseException as inner:
            if explicitly:
                raise outer from inner
            raise outer  # noqa: B904 - the implicit chain is what is tested
    except BaseException as error:
        return error


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (
            botocore.exceptions.NoCredentialsError(),
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9000"),
            "cannot reach the S3 endpoint http://127.0.0.1:9000: is the server running",
        ),
        (PermissionError("The request signature we calculated does not match"), "refused the secret key"),
        (
            PermissionError("The AWS Access Key Id you provided does not exist"),
            "does not know the access key",
        ),
        (PermissionError("Access Denied"), "access denied by http://127.0.0.1:9000: check the credentials"),
        (
            FileNotFoundError("The specified bucket does not exist"),
            "the bucket does not exist at http://127.0.0.1",
        ),
    ],
)
def test_each_failure_is_one_line_naming_the_remote_urls_and_what_to_check(error, problem):
    wrapped = [_raised_from(error, OSError("s3fs's own wrapper"), explicitly) for explicitly in (True, False)]
    for raised in (error, *wrapped):
        line = s3.explain(raised, URLS)
        assert line is not None and line.startswith("s3://bucket/shards: ") and problem in line
        assert "\n" not in line and "demo/run" not in line  # a local path is no store's


def test_without_a_remote_url_or_a_store_problem_there_is_nothing_to_explain():
    assert s3.explain(botocore.exceptions.NoCredentialsError(), ["demo/run", None]) is None
    assert s3.explain(ValueError("shapes differ"), URLS) is None
    assert (
        s3.explain(FileNotFoundError("s3://bucket/shards/x.tar"), URLS) is None
    )  # a missing file: the file's


def test_an_unset_endpoint_is_named_as_amazon_s3_with_how_to_set_one(monkeypatch):
    monkeypatch.delenv(s3.ENDPOINT_VARIABLE)
    line = s3.explain(PermissionError("Access Denied"), URLS)
    assert "Amazon S3 (AWS_ENDPOINT_URL is not set;" in line


def test_an_outage_past_its_deadline_keeps_the_url_the_time_and_the_explained_reason():
    outage = _raised_from(
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9000"),
        StillFailing("s3://bucket/shards/train/shard-000001.tar", 63.0, "ConnectionError"),
    )
    line = s3.explain(outage, URLS)
    assert line.startswith("s3://bucket/shards/train/shard-000001.tar: still failing after 63 s of retries: ")
    assert "cannot reach the S3 endpoint" in line
    # across a process boundary (a loader worker's error, pickled without its causes) it says the same
    carried = pickle.loads(pickle.dumps(s3.carried(outage)))
    assert str(carried) == line and s3.carried(ValueError("x")).args == ("x",)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (UserError("data/x.npy: 20 coefficients, expected 13"), "data/x.npy: 20 coefficients, expected 13"),
        (FileNotFoundError("demo/shards/stats.json"), "demo/shards/stats.json"),
        (StillFailing("s3://b/k", 5, "timed out"), "s3://b/k: still failing after 5 s of retries: timed out"),
        (ValueError("a bug"), None),
        (KeyError("a bug"), None),
    ],
)
def test_a_refusal_is_a_user_s_mistake_or_an_outage_and_a_bug_keeps_its_traceback(error, line, capsys):
    assert s3.refusal(error, ["demo/run"]) == line
    if line is None:
        with pytest.raises(type(error)):
            s3.refused(error, ["demo/run"])
    else:
        assert s3.refused(error, ["demo/run"]) == 2
        assert capsys.readouterr().err == f"error: {line}\n"


def test_local_urls_need_no_access_check_and_count_nothing(tmp_path):
    s3.check_access(str(tmp_path / "nowhere"))
    before = s3.throttled()
    s3.count_throttling(str(tmp_path))
    assert s3.throttled() == before


@pytest.mark.parametrize(("status", "counted"), [(503, 1), (502, 0), (504, 0), (500, 0), (200, 0)])
def test_only_a_503_answer_counts_as_throttling_and_once(status, counted):
    before = s3.throttled()
    s3._count_if_throttled(response=(SimpleNamespace(status_code=status), {}), attempts=1)
    s3._count_if_throttled(
        response=None, caught=ConnectionError()
    )  # no answer at all: not the store pushing back
    assert s3.throttled() - before == counted


def test_a_process_starts_with_nothing_counted():
    """The summaries add up what each process counted: every process starts from zero."""
    script = "from shards import s3; print(s3.throttled())"
    assert (
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        == "0\n"
    )

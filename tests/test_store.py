"""The store every command writes through: files are built in staging and published whole; a local
root stages inside itself (os.replace never crosses devices), an S3 root in one local folder per
destination, which a rerun clears of what a killed run left there."""

import tempfile

from shards.store import Store, glob_urls


def test_a_local_store_stages_inside_its_root_and_publishes_in_one_step(tmp_path):
    root = tmp_path / "data"
    store = Store(str(root))
    staged = store.staging_file("shard-000000.tar")
    assert staged.is_relative_to(root)
    staged.write_bytes(b"whole")
    assert store.list("train") == []  # a folder that does not exist yet lists empty
    store.publish(staged, "train/shard-000000.tar")
    assert (root / "train" / "shard-000000.tar").read_bytes() == b"whole"
    assert not staged.exists()
    assert store.list("train") == ["shard-000000.tar"]


def test_an_s3_store_stages_per_destination_and_a_rerun_clears_a_killed_runs_leftovers(s3_bucket):
    url = f"{s3_bucket}/data"
    killed = Store(url)
    leftover = killed.staging_file("shard-000000.tar")
    assert leftover.is_relative_to(tempfile.gettempdir())
    leftover.write_bytes(b"half a shard")  # the run is killed here: nothing was published
    neighbour = Store(f"{s3_bucket}/other").staging_file("shard-000000.tar")
    neighbour.write_bytes(b"another destination's work in progress")
    try:
        rerun = Store(url)
        assert rerun.list("train") == []
        rerun.clear_staging()
        assert not leftover.exists()
        assert neighbour.exists(), "clearing one destination's staging touched another's"

        staged = rerun.staging_file("index.json")
        staged.write_bytes(b"{}")
        rerun.publish(staged, "train/index.json")
        assert not staged.exists()
        assert Store(url).read_bytes("train/index.json") == b"{}"
        assert Store(url).list("train") == ["index.json"]
    finally:
        Store(f"{s3_bucket}/other").clear_staging()


def test_a_glob_gives_sorted_urls_with_the_pattern_s_own_protocol(tmp_path, s3_bucket):
    """fsspec's glob drops the protocol: the URLs must open again (watch, average and transcribe use them)."""
    for name in ("run-b/model.pt", "run-a/model.pt", "run-a/notes.txt"):
        Store(str(tmp_path)).publish_bytes(b"x", name)
        Store(s3_bucket).publish_bytes(b"x", name)
    assert glob_urls(f"{tmp_path}/*/model.pt") == [f"{tmp_path}/run-a/model.pt", f"{tmp_path}/run-b/model.pt"]
    bucket = s3_bucket.removeprefix("s3://")
    assert glob_urls(f"{s3_bucket}/*/model.pt") == [
        f"s3://{bucket}/run-a/model.pt",
        f"s3://{bucket}/run-b/model.pt",
    ]
    assert glob_urls(f"{tmp_path}/*/none.pt") == []

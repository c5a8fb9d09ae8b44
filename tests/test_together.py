"""train/together.py and the loop's replica check on real gloo ranks: rank 0's store work waited out together, a failure on every rank."""

from pathlib import Path

from tests.processes import accelerate_launch, why_failed

REPO = Path(__file__).resolve().parents[1]


def test_replicas_one_float_apart_are_caught_on_every_rank():
    """The loop's once-an-epoch check (which test_train.py's dev-score test relies on) on real
    gloo ranks: one weight one float32 step off on rank 1 is an error on both ranks."""
    probe = [str(REPO / "tests" / "replica_probe.py")]
    same = accelerate_launch([*probe, "same"])
    assert same.returncode == 0, why_failed(same.stderr)
    assert sorted(same.stdout.splitlines()) == ["rank 0 of 2: identical", "rank 1 of 2: identical"]
    for moved in ("diverge", "buffer"):  # a weight, or a BatchNorm running mean (saved and validated with)
        diverged = accelerate_launch([*probe, moved])
        assert diverged.returncode != 0
        assert sorted(diverged.stdout.splitlines()) == [
            f"rank {r} of 2: model replicas differ across ranks: weights or buffers were not synchronised"
            for r in (0, 1)
        ], why_failed(diverged.stderr)


def test_rank_0_s_store_work_outlasting_the_collective_timeout_is_waited_out_together():
    """Rank 0's checkpoint and metrics writes may retry an outage for io_deadline_s, more than once
    between two steps: the other ranks wait for them in collectives of seconds each (train/together.py),
    so that no collective outlasts the timeout. The probe's collective timeout is 3 s, its work 8 s."""
    probe = [str(REPO / "tests" / "together_probe.py")]
    lines = {
        mode: sorted(accelerate_launch([*probe, mode]).stdout.splitlines())
        for mode in ("together", "alone", "fails")
    }
    assert lines["together"] == ["rank 0: done", "rank 1: done"]
    # the stand-in for the old loop (rank 0 works, then a barrier) shows the probe can fail: rank 1 times out
    assert lines["alone"][1].startswith("rank 1: RuntimeError: ") and "Timed out" in lines["alone"][1]
    # Invariant: a failure reaches every rank, with the line rank 0 prints for it
    assert lines["fails"] == [
        "rank 0: OSError: s3://bucket/run/metrics.csv: still failing",
        "rank 1: FailedOnRank0: explained: s3://bucket/run/metrics.csv: still failing",
    ]

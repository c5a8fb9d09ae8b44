"""Run by `accelerate launch` in tests: rank 0's store work outlasting the collective timeout.

``together_probe.py together|alone|fails``: the process group's collective timeout is 3 s, the
poll 0.5 s, and rank 0's work takes 8 s. ``together`` waits for it with
``train.together.on_rank_0``; ``alone`` as the loop once did (rank 0 works, then every rank meets
in a barrier); ``fails`` waits together for work that raises after 8 s. Each rank prints ``rank R: done`` or ``rank R: <ErrorType>: <message>``.
"""

import datetime
import sys
import time

from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from train import together

WORK_S, TIMEOUT_S = 8, 3
together.POLL_S = 0.5  # well inside the 3 s timeout, also on a loaded machine


def slow_work() -> None:
    time.sleep(WORK_S)


def failing_work() -> None:
    time.sleep(WORK_S)
    raise OSError("s3://bucket/run/metrics.csv: still failing")


def main() -> int:
    accelerator = Accelerator(
        cpu=True, kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=TIMEOUT_S))]
    )
    rank = accelerator.process_index
    try:
        if sys.argv[1] == "alone":
            if accelerator.is_main_process:
                slow_work()
            accelerator.wait_for_everyone()
        else:
            work = failing_work if sys.argv[1] == "fails" else slow_work
            together.on_rank_0(accelerator, work, explain=lambda error: f"explained: {error}")
        line = f"rank {rank}: done"
    except Exception as error:
        line = f"rank {rank}: {type(error).__name__}: {str(error).splitlines()[0]}"
    sys.stdout.write(line + "\n")  # one write: two ranks' lines never interleave
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

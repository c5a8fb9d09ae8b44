"""Progress of the long loops of every stage (sharding, synthesis, training, decoding).

A tqdm bar when stderr is a terminal; otherwise, as in a log file or under a scheduler, one log
line every ``EVERY_S`` seconds with the same figures (done/total, rate, ETA and the loop's own),
so a log holds a few readable lines instead of hundreds of carriage-returned bar redraws.
"""

import logging
import sys
import time

from tqdm import tqdm

EVERY_S = 30.0


class Progress:
    """``with Progress(total, "scan train", "utt") as progress: ... progress.update(n, {"loss": "0.71"})``.

    ``shown=False`` (ranks other than 0) shows nothing; ``done`` starts a resumed loop part-way.
    """

    def __init__(
        self,
        total: int,
        name: str,
        unit: str,
        *,
        done: int = 0,
        shown: bool = True,
        every_s: float = EVERY_S,
        log: logging.Logger | None = None,
    ):
        self.total, self.name, self.unit, self.every_s = total, name, unit, every_s
        self.done = self.first = done
        self.log = log or logging.getLogger("progress")
        terminal = sys.stderr.isatty()
        self.writes_lines = shown and not terminal
        self.bar = tqdm(
            total=total, initial=done, desc=name, unit=unit, mininterval=1, disable=not (shown and terminal)
        )
        self.started = self.last_line = time.monotonic()

    def update(self, n: int = 1, figures: dict[str, str] | None = None) -> None:
        self.done += n
        self.bar.update(n)
        if figures:
            self.bar.set_postfix(figures, refresh=False)
        now = time.monotonic()
        if self.writes_lines and now - self.last_line >= self.every_s:
            self.last_line = now
            rate = (self.done - self.first) / max(now - self.started, 1e-9)
            extra = "".join(f", {name} {value}" for name, value in (figures or {}).items())
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            speed = f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / max(rate, 1e-9):.1f} s/{self.unit}"
            self.log.info(
                "%s: %d/%d %s, %s%s, ETA %.0f s",
                self.name,
                self.done,
                self.total,
                self.unit,
                speed,
                extra,
                eta,
            )

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_) -> None:
        self.bar.close()  # its line ended even when the loop raised: an error message starts a line

"""The one family of errors a user can fix: a setting, an argument, the data, the storage.

A missing file (``FileNotFoundError``) and an outage that outlasted its retries (``StillFailing``)
belong to it too.

Each is raised with a message that names the file, URL or key and the problem. Every command
prints such an error as one ``error: …`` line and exits 2 (``shards.s3.refusal``); any other exception is a
bug and keeps its traceback. An object-store failure (credentials, a missing bucket, an outage
past the deadline) is explained as one line too (``shards/s3.py``).
"""

import sys


class UserError(Exception):
    """Something the user can fix, named in the message."""


class MissingInput(UserError, FileNotFoundError):
    """A file or URL the user named, or one it must contain, is not there."""


def write_error_lines(lines: list[str]) -> None:
    """``error: <line>`` for each line, all in one write: ranks run unbuffered (-u), where print
    writes a text and its newline apart, and the lines of ranks that fail at the same moment (a bad
    setting, a refusal every rank makes) would interleave."""
    sys.stderr.write("".join(f"error: {line}\n" for line in lines))

"""The one family of errors a user can fix: a setting, an argument, the data, the storage.

A missing file (``FileNotFoundError``) and an outage that outlasted its retries (``StillFailing``)
belong to it too.

Each is raised with a message that names the file, URL or key and the problem. Every command
prints such an error as one ``error: …`` line and exits 2 (``shards.s3.refusal``); any other exception is a
bug and keeps its traceback. An object-store failure (credentials, a missing bucket, an outage
past the deadline) is explained as one line too (``shards/s3.py``).
"""


class UserError(Exception):
    """Something the user can fix, named in the message."""


class MissingInput(UserError, FileNotFoundError):
    """A file or URL the user named, or one it must contain, is not there."""

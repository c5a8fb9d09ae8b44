"""Servers on 127.0.0.1 that the tests and the benchmarks start as a user would: an S3-compatible
store (``loopback.s3``), a Dask cluster (``loopback.cluster``), the free ports they bind
(``loopback.ports``) and the process groups that end with them (``loopback.processes``).
Development tooling: its packages are the test extra's, and nothing under pipeline/, shards/,
train/ or eval/ imports it."""

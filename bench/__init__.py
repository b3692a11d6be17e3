"""Benchmarks for hookhub, each printing its numbers next to a ceiling measured in the same run.

Absolute numbers depend on the machine and on whatever else runs on it; a ratio to a ceiling taken
minutes earlier on the same box is what can be compared across machines and commits.
`python -m bench.ingest` is the ingest benchmark (issue #2), `python -m bench.fanout` the fan-out
one (issue #3), `python -m bench.archive` and `python -m bench.resend` measure the archive (issue #7),
and `python -m bench.backlog` ingest and recovery with a backlog waiting (issue #9); `make bench`
runs them all.
"""

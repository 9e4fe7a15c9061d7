"""`make bench`: Case Desk at 100,000 and 1,000,000 cases on SQLite and PostgreSQL, each
figure measured beside the naive way and the floor (bare SQL) in the same run.

Run `python -m benchmarks --help`. Databases are built once under benchmarks/data/
(git-ignored) and reused; every run works on a throwaway copy, so the scans and
transitions it measures never change the built database.
"""

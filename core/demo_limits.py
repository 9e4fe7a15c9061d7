"""The demo generator's constants that others read, on their own: the `casedesk demo`
option reads the size limit at every start of the command line, and the benchmark's
build reads the data version; importing `core.demo` for them cost about a third of a
second before anything ran."""

MAX_CASES = 2_000_000  # beyond this the run takes many minutes and gigabytes: refuse

# What the generator writes, as a version: bumped whenever the same seed would give other
# rows, so the benchmark's kept databases (benchmarks/build.py) are built again instead
# of reused. 2: about six history rows per case.
DATA_VERSION = 2

"""The demo generator's size limit, on its own: the `casedesk demo` option reads it at
every start of the command line, and importing `core.demo` for it cost about a third of
a second before any command ran."""

MAX_CASES = 2_000_000  # beyond this the run takes many minutes and gigabytes: refuse

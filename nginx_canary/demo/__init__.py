"""Demo pieces: a backend whose behaviour changes at runtime, and a bounded load generator.

Nothing here is imported by the daemon: the demo, the tests and the benchmarks
use it to stand in for "your application" and "your users".
"""

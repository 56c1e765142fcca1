"""The benchmark behind docs/BENCHMARKS.md: `make bench`, or `python -m bench.run --quick` for a smoke run."""

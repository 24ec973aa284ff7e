"""Benchmarks: `python -m benchmarks.NAME [--quick]` from the repository root, JSON in benchmarks/results/."""

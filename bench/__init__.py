"""Benchmarks for `make bench` (see bench/README.md): baselines and measured paths as ratios."""

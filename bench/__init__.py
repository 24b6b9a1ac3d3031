"""Benchmarks of the hot paths against the app's own ceiling (docs/performance.md)."""

"""Benchmarks behind ``poolwarden bench``: each reports a ratio against a same-process baseline."""

"""Benchmarks of the suite (see benchmarks/__main__.py)."""

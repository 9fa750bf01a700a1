"""Synthetic data for demos, tests and benchmarks: the abdominal CT phantom and the result preview image."""

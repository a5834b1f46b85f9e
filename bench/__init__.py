"""Benchmarks (never timed assertions inside tests): see load.py."""

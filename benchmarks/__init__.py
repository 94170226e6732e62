"""Benchmarks: one script per measured question, each printing a table."""

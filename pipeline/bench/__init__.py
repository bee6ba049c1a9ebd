"""Benchmark drivers: whole assimilations, timings and comparisons written as markdown reports."""

"""Measuring speed and judging change: timing, statistics, baselines and the CI gate."""

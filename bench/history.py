"""The optimisations the benchmarks led to, with the figures before and after.

This part of docs/PERFORMANCE.md is history, not a measurement of this run: each
before/after pair was measured with the command shown, in one session on the
same machine, ratios against the baseline of their own run.
"""

TEXT = """
## Optimisations

(none recorded yet)
"""

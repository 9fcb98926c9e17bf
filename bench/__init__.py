"""Side-by-side benchmarks: ours and the reference on the same data, in one process.

Run with `make bench`. Never part of the test run; speed is judged only by the
ratios printed here, measured side by side.
"""

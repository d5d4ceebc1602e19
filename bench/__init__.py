"""The batchrun benchmark harness: a pinned bench server and three clients measured side by side.

Kept import-free so that ``python -m bench.launch`` stays small (see bench/launch.py).
"""

"""``python -m bench``: run the benchmark scenarios (see bench/run.py)."""

from bench.run import main

main()

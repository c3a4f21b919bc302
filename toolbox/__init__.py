"""Reproducible llama.cpp benchmarks on AMD Strix Halo.

Data flow, one package per stage (docs/architecture.md is the map):
build (pins -> images) -> run (matrix -> containers via engine) -> parse -> store (results/<run_id>/)
-> quality (is the output right?) -> analysis (pooling, statistics, comparisons) -> report -> cli.
"""

__version__ = "0.1.0"

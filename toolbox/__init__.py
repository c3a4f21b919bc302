"""Reproducible llama.cpp benchmarks on AMD Strix Halo.

Data flow (one module per stage, see DESIGN.md):
pins -> images -> matrix -> runner -> llama_bench (parse) -> results -> report / compare.
"""

__version__ = "0.1.0"

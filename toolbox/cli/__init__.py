"""The invoke tasks, one module per group; tasks.py gathers them into the namespace. Each task reads flags, calls the package, prints."""

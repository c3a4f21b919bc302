"""tune: a budgeted search for the fastest configuration whose output is right (docs/tune.md)."""

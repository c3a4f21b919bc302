"""Analysis of stored rows: which rows are the same test (identity), statistics, roofline, provenance, comparisons."""

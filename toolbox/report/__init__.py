"""What the user reads: tables, plots, report.md / report.html, compare and check views, the bench summary, the optimization log."""

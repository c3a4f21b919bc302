"""The results store: results/<run_id>/{run.json, rows.jsonl, quality.jsonl, logs/}, import and export. Imports nothing above it."""

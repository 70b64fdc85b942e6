"""Shared machinery of the scripts: engine.py (the loop), results.py (run folders),
cli.py (flags, validation, entry point)."""

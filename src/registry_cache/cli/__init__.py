"""Command-line interface: one module per command, one place for exit codes (main.py)."""

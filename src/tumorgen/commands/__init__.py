"""Subcommands of the `tumorgen` CLI: one module per command, argument parsing and a call."""

"""The one exception type a user can cause and fix.

Anything raised as `TumorGenError` is printed by the CLI as a single sentence with a non-zero exit
code and no traceback; every other exception is a bug in TumorGen and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class TumorGenError(Exception):
    """A problem with the user's input (a file, a flag, a checkpoint), described in one sentence."""


def fail_on(path: str | Path, problem: str) -> TumorGenError:
    """Build the standard message: the file first, then what is wrong with it."""
    return TumorGenError(f"{path}: {problem}")

"""Atomic outputs: a reader never sees a half-written file or folder.

Files are written to a temporary name beside their destination and renamed into place; `os.replace`
is atomic on one filesystem. Folders of outputs are built in a staging folder and renamed at the end,
so a failure (or a kill) leaves either the old state or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tumorgen.errors import TumorGenError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path with the same suffixes; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def staged_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in `<out>.partial-*` and move it to `out` only on success.

    An existing `out` is refused unless `overwrite`; then it is replaced only after the new one is
    complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise TumorGenError(f"{out}: already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)

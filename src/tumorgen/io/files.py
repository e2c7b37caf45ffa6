"""Reading files from untrusted sources: their SHA-256, a folder's JSON index, and torch files that
must not run code.

torch is imported by `read_torch_file` only, so hashing a file stays cheap to import.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from tumorgen.errors import fail_on


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The file's SHA-256 as hex, read in `chunk`-byte blocks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_index(index: Path, *, fmt: str, required: tuple[str, ...], version: int | None = None) -> dict:
    """A folder's JSON index (PREP's dataset.json, a generated set's generated.json), checked up front.

    Args:
        index: the JSON file; its folder was checked by the caller.
        fmt: the expected "format" value.
        required: keys the index must hold.
        version: the one "version" this TumorGen reads, or None to leave it unchecked.
    """
    try:
        info = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail_on(index, f"is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise fail_on(index, f"has format {info.get('format') if isinstance(info, dict) else None!r}, expected {fmt!r}")
    if version is not None and info.get("version") != version:
        raise fail_on(index, f"has version {info.get('version')!r}; this TumorGen reads version {version}")
    missing = [key for key in required if key not in info]
    if missing:
        raise fail_on(index, f"lacks the keys {', '.join(missing)}")
    return info


def read_torch_file(path: str | Path, *, what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` on the CPU; a file that needs code to unpickle is refused, never run.

    Every failure is one `TumorGenError` sentence naming the file (torch's own messages run over several
    lines and advise turning the safe mode off, which is exactly what must not be done).

    Args:
        path: any torch file from an untrusted source (a checkpoint, pretrained weights).
        what: what the file should be, for the message ("checkpoint", "VAE weights file").
    """
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # the weights-only unpickler met a class or function reference
            raise fail_on(path, f"refused: the file holds Python objects that would run code when loaded, "
                                f"not a {what}") from None
        raise fail_on(path, f"is not a readable {what} (not a torch file, or corrupt)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError, AttributeError,
            KeyError, IndexError, TypeError) as err:  # random bytes reach the unpickler's tables (seen: KeyError 255)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise fail_on(path, f"is not a readable {what} (truncated or not a torch file: {first})") from None

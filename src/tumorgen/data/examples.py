"""The example scans that ship inside the package: real FDG-PET sarcomas to synthesize into at once.

Three cases of the bundled model's test split (never trained on), with their masks, so that the first
command a user runs puts a tumor into real PET (`tumorgen examples`, `tumorgen demo`). Licence and
citation: `tumorgen/examples/README.md` (CC BY 3.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

EXAMPLE_BOX_MARGIN = 2  # voxels a face around the real tumor: the box the bundled model was judged in


@dataclass(frozen=True)
class ExampleCase:
    """One shipped example: its name, PET (SUV) and tumor mask files."""

    name: str
    image: Path
    mask: Path


def examples_root() -> Path:
    return Path(str(resources.files("tumorgen"))) / "examples"


def example_cases() -> list[ExampleCase]:
    """Every shipped example, sorted by name (empty when the package was installed without them)."""
    root = examples_root()
    if not root.is_dir():
        return []
    return [ExampleCase(name=p.name, image=p / "PET_image.nii.gz", mask=p / "PET_mask.nii.gz")
            for p in sorted(root.iterdir()) if (p / "PET_image.nii.gz").is_file() and (p / "PET_mask.nii.gz").is_file()]


def tumor_box(mask: np.ndarray, margin: int = EXAMPLE_BOX_MARGIN) -> tuple[int, ...]:
    """The real tumor's tight box + `margin` voxels a face, clipped to the volume (half-open, (X, Y, Z))."""
    from tumorgen.data.box_geometry import tight_box

    return tight_box(mask, margin=margin)

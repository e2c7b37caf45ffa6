"""Write an nnU-Net v2 raw dataset: what the synthetic tumors are for (training a segmenter).

nnU-Net's raw layout is a contract (nnU-Net v2 documentation, "dataset format"):

    nnUNet_raw/DatasetXXX_Name/        XXX: the dataset id, three digits
        imagesTr/<case>_0000.nii.gz    channel 0 (here PET, SUV, float32)
        labelsTr/<case>.nii.gz         integer labels, the image's geometry
        dataset.json                   channel_names, labels (name -> int), numTraining, file_ending

Cases are written one at a time, each file atomically, the label last: a case counts as written
(`has_case`) only when its label exists, so an interrupted augmentation resumes where it stopped.
`finalize` counts the labels on disk, so numTraining is right after any number of resumed runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.atomic import write_json
from tumorgen.io.nifti import save_volume
from tumorgen.synthesis.manifest import safe_case_name

FILE_ENDING = ".nii.gz"
_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder convention: `Dataset` + the id as three digits + `_` + the name."""
    if not 1 <= int(dataset_id) <= 999:
        raise TumorGenError(f"nnU-Net dataset id {dataset_id} must be between 1 and 999")
    if not _DATASET_NAME.match(name):
        raise TumorGenError(f"nnU-Net dataset name {name!r} may hold only letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


class NnunetDatasetWriter:
    """Add cases to an nnU-Net v2 raw dataset folder, then write its dataset.json.

    Args:
        out_dir: nnUNet_raw (the dataset folder is made inside it), or the dataset folder itself when
            its name already reads `DatasetXXX_Name` with the same id and name.
        dataset_id: 1-999 (nnU-Net reserves nothing here; ids of public datasets you also use must differ).
        name: the dataset's name.
        channel_names: input channels, index (as a string) -> name; "CT" would switch nnU-Net to CT
            normalization, any other name (PET) to per-image z-scoring.
        labels: label name -> integer, background 0, consecutive.
        description: recorded in dataset.json.
        overwrite_image_reader_writer: an nnU-Net reader class name (e.g. "NibabelIOWithReorient");
            None lets nnU-Net choose by file ending (SimpleITKIO for .nii.gz).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        dataset_id: int,
        name: str,
        channel_names: dict | None = None,
        labels: dict | None = None,
        description: str = "PET with TumorGen synthetic tumors",
        overwrite_image_reader_writer: str | None = None,
    ):
        folder = dataset_folder_name(dataset_id, name)
        out_dir = Path(out_dir)
        match = _DATASET_FOLDER.match(out_dir.name)
        if match:
            if out_dir.name != folder:
                raise fail_on(out_dir, f"is named like an nnU-Net dataset but not {folder}")
            self.dataset_dir = out_dir
        else:
            self.dataset_dir = out_dir / folder
        self.channel_names = {str(k): str(v) for k, v in (channel_names or {"0": "PET"}).items()}
        self.labels = {str(k): int(v) for k, v in (labels or {"background": 0, "tumor": 1}).items()}
        if sorted(self.labels.values()) != list(range(len(self.labels))) or self.labels.get("background") != 0:
            raise TumorGenError(f"nnU-Net labels {self.labels} must be background 0 and consecutive integers")
        if sorted(self.channel_names) != [str(i) for i in range(len(self.channel_names))]:
            raise TumorGenError(f"nnU-Net channel names {self.channel_names} must be keyed 0, 1, ...")
        self.name = name
        self.description = description
        self.reader_writer = overwrite_image_reader_writer
        self.images_dir = self.dataset_dir / "imagesTr"
        self.labels_dir = self.dataset_dir / "labelsTr"

    def _paths(self, case_id: str) -> tuple[list[Path], Path]:
        case = safe_case_name(case_id)
        images = [self.images_dir / f"{case}_{int(c):04d}{FILE_ENDING}" for c in sorted(self.channel_names, key=int)]
        return images, self.labels_dir / f"{case}{FILE_ENDING}"

    def has_case(self, case_id: str) -> bool:
        """Whether the case is complete on disk (its label, written last, exists)."""
        images, label = self._paths(case_id)
        return label.is_file() and all(p.is_file() for p in images)

    def add_case(self, case_id: str, image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> Path:
        """Write one case: image(s) first, label last, each atomically; returns the label's path.

        Args:
            case_id: the case identifier (sanitized into a file name).
            image: (X, Y, Z) for one channel, or (C, X, Y, Z) for C channels.
            mask: (X, Y, Z) integer labels among `labels`' values.
            affine: the (4, 4) voxel-to-world map shared by image and label.
        """
        images, label = self._paths(case_id)
        channels = np.asarray(image)
        channels = channels[None] if channels.ndim == 3 else channels  # (C, X, Y, Z)
        if channels.shape[0] != len(images):
            raise ValueError(f"{case_id}: {channels.shape[0]} image channels for {len(images)} channel names")
        if channels.shape[1:] != np.shape(mask):
            raise ValueError(f"{case_id}: image {channels.shape[1:]} and mask {np.shape(mask)} differ in shape")
        values = np.unique(mask)
        if not np.all(np.isin(values, list(self.labels.values()))):
            raise ValueError(f"{case_id}: mask values {values.tolist()} are not among the labels {self.labels}")
        for path, channel in zip(images, channels):
            save_volume(channel, affine, path, dtype=np.float32)
        save_volume(mask, affine, label, dtype=np.uint8)
        return label

    def case_ids(self) -> list[str]:
        """The complete cases on disk (those with a label)."""
        if not self.labels_dir.is_dir():
            return []
        ids = sorted(p.name[: -len(FILE_ENDING)] for p in self.labels_dir.glob(f"*{FILE_ENDING}"))
        return [case for case in ids if self.has_case(case)]

    def finalize(self) -> Path:
        """Write dataset.json atomically, counting the complete cases on disk."""
        dataset = {
            "channel_names": self.channel_names,
            "labels": self.labels,
            "numTraining": len(self.case_ids()),
            "file_ending": FILE_ENDING,
            "name": self.name,
            "description": self.description,
        }
        if self.reader_writer:
            dataset["overwrite_image_reader_writer"] = self.reader_writer
        self.dataset_dir.mkdir(parents=True, exist_ok=True)
        return write_json(self.dataset_dir / "dataset.json", dataset)

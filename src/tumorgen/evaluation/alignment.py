"""DSC and NSD of the alignment segmenter on the paired protocol's outputs (the paper's Table 2 columns).

The paper runs a pretrained nnU-Net on every synthetic image and scores its mask against the generated
one: a generated mask that a segmenter finds again sits where the image shows a tumor. Here the
segmenter is `tumorgen train-seg`'s (trained on the real training split, `evaluation.segmenter`), run
on each output of a paired-protocol folder written with `--save-volumes`. Its prediction is kept inside
the case's box: outside it every method's output is the same real scan, so what the segmenter finds
there says nothing about the method. DSC, and NSD at `tolerance_mm`, per case and their mean and sd
(`segmentation_metrics`; an empty prediction of an empty mask scores 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tumorgen.data.box_geometry import box_slices
from tumorgen.errors import fail_on
from tumorgen.evaluation.segmentation_metrics import dice, nsd
from tumorgen.evaluation.segmenter import load_segmenter, predict_mask
from tumorgen.io.nifti import load_volume
from tumorgen.synthesis.generate import resolve_inference_device

NSD_TOLERANCE_MM = 2.0  # as `tumorgen evaluate --nsd-tolerance-mm`: every NSD of this project at one tolerance


def segmenter_agreement(paired: str | Path, segmenter: str | Path, *, rows: Sequence[str] | None = None,
                        tolerance_mm: float = NSD_TOLERANCE_MM, device: str = "cpu") -> dict:
    """The segmenter's DSC and NSD against each row's generated masks in a paired-protocol folder.

    Args:
        paired: an `evaluate-paired --save-volumes` output folder.
        segmenter: a `tumorgen train-seg` run folder.
        rows: the rows (methods) to score; None: every row.
        tolerance_mm: NSD's tolerance.
        device: where the segmenter runs.

    Returns:
        {"segmenter", "tolerance_mm", "rows": {row: {"DSC", "DSC_std", "NSD", "NSD_std", "n", "per_case"}}}.
    """
    paired = Path(paired)
    metrics_path = paired / "metrics.json"
    if not metrics_path.is_file():
        raise fail_on(paired, "is not a finished paired-protocol folder (no metrics.json)")
    metrics = json.loads(metrics_path.read_text())
    suv_max = float(metrics["suv_max"])
    chosen = list(metrics["per_case"]) if rows is None else list(rows)
    missing = [r for r in chosen if r not in metrics["per_case"]]
    if missing:
        raise fail_on(metrics_path, f"has no row {missing[0]!r} (rows: {', '.join(metrics['per_case'])})")
    for row in chosen:  # before the network loads: a folder without its volumes fails at once
        for record in metrics["per_case"][row]:
            for part in ("suv", "mask"):
                if not (paired / "volumes" / f"{record['case']}_{row}_{part}.nii.gz").is_file():
                    raise fail_on(paired, f"has no volumes/{record['case']}_{row}_{part}.nii.gz; run evaluate-paired "
                                          "with --save-volumes")
    torch_device = resolve_inference_device(device)
    model, spec = load_segmenter(segmenter, device=torch_device)
    scored = {}
    for row in chosen:
        per_case = []
        for record in metrics["per_case"][row]:
            suv = load_volume(paired / "volumes" / f"{record['case']}_{row}_suv.nii.gz")
            generated = load_volume(paired / "volumes" / f"{record['case']}_{row}_mask.nii.gz", kind="mask").array
            image = np.clip(suv.array / np.float32(suv_max), 0.0, 1.0)  # the PREP range the segmenter learned
            predicted = predict_mask(model, image, roi=spec.roi, device=torch_device)
            kept = np.zeros_like(predicted)
            kept[box_slices(record["box"])] = predicted[box_slices(record["box"])]
            per_case.append({"case": record["case"], "DSC": dice(kept, generated),
                             "NSD": nsd(kept, generated, tolerance_mm=tolerance_mm, spacing=suv.spacing)})
        dsc = np.array([c["DSC"] for c in per_case])
        nsds = np.array([c["NSD"] for c in per_case])
        scored[row] = {"DSC": float(dsc.mean()), "DSC_std": float(dsc.std()), "NSD": float(nsds.mean()),
                       "NSD_std": float(nsds.std()), "n": len(per_case), "per_case": per_case}
    return {"segmenter": str(segmenter), "tolerance_mm": float(tolerance_mm), "rows": scored}

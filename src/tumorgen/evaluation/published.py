"""The paper's published numbers (`../shared/paper/tumorgen-paper.txt`), to print beside ours.

Copied digit for digit from the paper's Tables 1-3. They were measured on Hecktor-2021 (24 test scans)
and AutoPET (15), with FID on the middle slice of each plane of whole crops; ours come from the
paired protocol on the IBSI test split (10 scans, tumor-centred slices), so the two share a ranking
question, not a scale: compare orders and gaps, not values.
"""

from __future__ import annotations

# Table 1: FID per plane on Hecktor and AutoPET, by method (our method names)
TABLE1 = {
    "hagan": {"hecktor": (137.561, 103.794, 114.298, 118.551), "autopet": (130.187, 152.133, 128.709, 137.010)},
    "medfusion": {"hecktor": (144.625, 125.834, 87.517, 119.325), "autopet": (138.462, 129.524, 136.280, 134.755)},
    "bld": {"hecktor": (75.718, 56.883, 73.486, 68.696), "autopet": (72.371, 114.110, 109.307, 98.596)},
    "syntumor": {"hecktor": (93.024, 85.035, 91.042, 89.701), "autopet": (108.671, 98.704, 119.638, 109.004)},
    "difftumor": {"hecktor": (80.281, 52.659, 67.523, 66.821), "autopet": (82.394, 96.248, 76.195, 84.946)},
    "tumorgen": {"hecktor": (54.877, 39.633, 61.593, 52.035), "autopet": (66.432, 66.933, 83.934, 72.433)},
}
PLANES = ("A", "S", "C", "Avg")  # the order of each tuple above

# Table 2 (the paper calls it Table 3 in its text): ablations on Hecktor, FID(Avg), DSC and NSD of an nnU-Net
TABLE2 = {
    "no_bapmg": {"FID": 66.263, "DSC": 0.677, "NSD": 0.711},
    "no_coarse": {"FID": 55.416, "DSC": 0.660, "NSD": 0.673},
    "no_fine": {"FID": 63.611, "DSC": 0.680, "NSD": 0.713},
    "no_vmr": {"FID": 54.279, "DSC": 0.614, "NSD": 0.577},
    "full": {"FID": 52.035, "DSC": 0.694, "NSD": 0.741},
}

# Table 3: sampler, FID(Avg) on Hecktor and seconds per sample (the paper's GPU)
TABLE3 = {
    "ddpm-50": {"method": "DiffTumor", "FID": 66.821, "seconds": 1.226},
    "ddim-50": {"method": "DiffTumor", "FID": 68.306, "seconds": 1.133},
    "rfm-50": {"method": "TumorGen", "FID": 52.035, "seconds": 1.061},
    "rfm-10": {"method": "TumorGen", "FID": 55.862, "seconds": 0.218},
}


def table1_fid(method: str, dataset: str, plane: str = "Avg") -> float | None:
    """The paper's FID of `method` ("tumorgen", "difftumor", ...) on "hecktor" or "autopet"; None if absent."""
    row = TABLE1.get(method, {}).get(dataset)
    return None if row is None else row[PLANES.index(plane)]

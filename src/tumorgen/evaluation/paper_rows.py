"""The paper's three tables as rows, from the paired protocol's metrics, with the published values beside
ours and a word on which differences exceed the noise.

The noise, written once here so every table reads it the same way (a yardstick, not a test):
- FID and KID: the real-vs-real floor's spread (the sd of the metric between the real test cases and
  as many real training cases over `FLOOR_REPEATS` draws: how much the metric moves at this n with no
  method at all), or, for rows repeated over protocol seeds, the larger of that and either row's sd over
  seeds. A difference beyond it "exceeds the noise"; one within it does not, however it points.
- DSC and NSD (Table 2): per case, the row's score minus the full model's on the same case and seed
  (both saw the same boxes), averaged over the seeds both ran; the mean difference exceeds the noise
  when it is more than twice its standard error over cases.
A Table 2 row at the first seed whose FID or KID lies within the floor's spread of the full model's
`needs_repeat`: it and the full model are run at the other protocol seeds.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tumorgen.evaluation import published
from tumorgen.evaluation.tables import Column

FLOOR_NAME = "real vs real (test vs train)"
NAMES = {"hagan": "HA-GAN", "medfusion": "MedFusion", "bld": "BLD", "syntumor": "SynTumor", "difftumor": "DiffTumor",
         "tumorgen": "TumorGen"}
VARIANT_NAMES = {"full": "full model", "no_bapmg": "no BA-PMG", "no_coarse": "no coarse constraint",
                 "no_fine": "no fine constraint", "no_vmr": "no VMR"}

TABLE1_COLUMNS = (
    Column("method", "method", "{}"),
    *(Column(f"FID({p})", p, "{:.1f}", std_key=f"{p}_spread") for p in ("A", "S", "C", "Avg")),
    Column("KID(Avg)", "KID_Avg", "{:.4f}", std_key="KID_Avg_spread"),
    Column("vs TumorGen, beyond the floor's spread", "verdict", "{}"),
    Column("paper FID(Avg) Hecktor", "paper_hecktor", "{:.1f}"),
    Column("paper FID(Avg) AutoPET", "paper_autopet", "{:.1f}"),
)
PUBLISHED_TABLE1_COLUMNS = (
    Column("method", "method", "{}"),
    *(Column(f"Hecktor FID({p})", f"hecktor_{p}", "{:.3f}") for p in published.PLANES),
    *(Column(f"AutoPET FID({p})", f"autopet_{p}", "{:.3f}") for p in published.PLANES),
)
TABLE2_COLUMNS = (
    Column("ablation", "ablation", "{}"),
    Column("seeds", "seeds", "{}"),
    Column("FID(Avg)", "FID", "{:.1f}", std_key="FID_sd"),
    Column("KID(Avg)", "KID", "{:.4f}", std_key="KID_sd"),
    Column("mean SUV ratio", "uptake", "{:.2f}"),
    Column("volume ratio", "volume", "{:.2f}"),
    Column("DSC", "DSC", "{:.3f}", std_key="DSC_std"),
    Column("NSD", "NSD", "{:.3f}", std_key="NSD_std"),
    Column("vs full, beyond the noise", "verdict", "{}"),
    Column("paper FID", "paper_FID", "{:.1f}"),
    Column("paper DSC", "paper_DSC", "{:.3f}"),
    Column("paper NSD", "paper_NSD", "{:.3f}"),
)
TABLE3_COLUMNS = (
    Column("method", "method", "{}"),
    Column("sampling", "sampling", "{}"),
    Column("s/sample (batch 1)", "batch1_s", "{:.3f}"),
    Column("s/batch", "batch_s", "{:.3f}"),
    Column("s/sample (that batch)", "batch_per_sample_s", "{:.3f}"),
    Column("FID(Avg)", "FID", "{:.1f}"),
    Column("KID(Avg)", "KID", "{:.4f}"),
    Column("s/sample in the protocol", "protocol_s", "{:.2f}"),
    Column("paper FID", "paper_FID", "{:.1f}"),
    Column("paper s/sample (GPU)", "paper_s", "{:.3f}"),
)


def protocol_row(metrics: Mapping, name: str) -> dict | None:
    """The paired protocol's table row named `name` (e.g. "tumorgen-10", "difftumor-ddim-50"), or None."""
    return next((dict(row) for row in metrics["table"] if row["method"] == name), None)


def method_row_name(kind: str, *, sample_steps: int, baseline_steps: int, sampler: str = "ddim") -> str:
    """The row the paired protocol names a method's output by."""
    if kind == "tumorgen":
        return f"tumorgen-{sample_steps}"
    if kind in ("difftumor", "bld", "medfusion"):
        return f"{kind}-{sampler}-{baseline_steps}"
    return kind


def spread(floor: Mapping | None, key: str) -> float:
    """The floor's sd of `key` over its draws (0 without a floor)."""
    return float((floor or {}).get(f"{key}_spread") or 0.0)


def _judge(name: str, delta: float | None, noise: float, *, higher_is_worse: bool) -> str | None:
    """"FID worse (+8.1)" when |delta| exceeds the noise, else None."""
    if delta is None or not np.isfinite(delta) or abs(delta) <= noise:
        return None
    worse = (delta > 0) == higher_is_worse
    digits = 4 if name == "KID" else (1 if name == "FID" else 3)
    return f"{name} {'worse' if worse else 'better'} ({delta:+.{digits}f})"


def _verdict(parts: Sequence[str | None]) -> str:
    said = [p for p in parts if p]
    return ", ".join(said) if said else "within the noise"


def table1_rows(main: Mapping, *, sample_steps: int, baseline_steps: int) -> list[dict]:
    """Table 1: the floor, then each method in the paper's order, FID per plane, KID, the verdict against
    TumorGen (the floor's spread) and the paper's FID(Avg) on Hecktor and AutoPET."""
    floor = main.get("floor")
    rows = [{"method": FLOOR_NAME, **(floor or {}), "verdict": "–"}]
    ours = protocol_row(main, method_row_name("tumorgen", sample_steps=sample_steps, baseline_steps=baseline_steps))
    for kind in ("hagan", "medfusion", "bld", "syntumor", "difftumor", "tumorgen"):
        name = method_row_name(kind, sample_steps=sample_steps, baseline_steps=baseline_steps)
        row = protocol_row(main, name)
        if row is None:
            continue
        label = f"{NAMES[kind]} ({name})" if name != kind else NAMES[kind]
        verdict = "–"
        if ours is not None and kind != "tumorgen" and "Avg" in row:
            verdict = _verdict([_judge("FID", row["Avg"] - ours["Avg"], spread(floor, "Avg"), higher_is_worse=True),
                                _judge("KID", row["KID_Avg"] - ours["KID_Avg"], spread(floor, "KID_Avg"),
                                       higher_is_worse=True)])
        rows.append({**{k: row.get(k) for k in ("A", "S", "C", "Avg", "KID_Avg")}, "method": label,
                     "verdict": verdict, "paper_hecktor": published.table1_fid(kind, "hecktor"),
                     "paper_autopet": published.table1_fid(kind, "autopet")})
    return rows


def published_table1_rows() -> list[dict]:
    """The paper's Table 1 as printed (FID per plane, both datasets)."""
    return [{"method": NAMES[kind], **{f"{d}_{p}": published.table1_fid(kind, d, p) for d in ("hecktor", "autopet")
                                       for p in published.PLANES}} for kind in published.TABLE1]


def needs_repeat(row: Mapping, full: Mapping, floor: Mapping | None) -> bool:
    """Whether a Table 2 row's FID or KID at the first seed lies within the floor's spread of the full model's."""
    return (abs(row["Avg"] - full["Avg"]) <= spread(floor, "Avg")
            or abs(row["KID_Avg"] - full["KID_Avg"]) <= spread(floor, "KID_Avg"))


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _variant_summary(runs: Mapping[int, tuple[Mapping, Mapping | None]], row_name: str) -> dict:
    """A Table 2 variant over its seeds: {seed: (paired metrics, alignment scores)} -> means and sds."""
    seeds = sorted(runs)
    rows = [protocol_row(runs[s][0], row_name) or {} for s in seeds]
    fid = [r["Avg"] for r in rows if "Avg" in r]
    kid = [r["KID_Avg"] for r in rows if "KID_Avg" in r]
    scores = [runs[s][1]["rows"][row_name] for s in seeds if runs[s][1] is not None]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {"seeds": ",".join(map(str, seeds)), "FID": mean(fid), "FID_sd": _sd(fid) if len(fid) > 1 else None,
            "KID": mean(kid), "KID_sd": _sd(kid) if len(kid) > 1 else None,
            "uptake": mean([r.get("mean_ratio_median") for r in rows]),
            "volume": mean([r.get("volume_ratio_median") for r in rows]),
            "DSC": mean([s["DSC"] for s in scores]), "DSC_std": mean([s["DSC_std"] for s in scores]),
            "NSD": mean([s["NSD"] for s in scores]), "NSD_std": mean([s["NSD_std"] for s in scores]),
            "_fid": fid, "_kid": kid, "_floors": [runs[s][0].get("floor") for s in seeds],
            "_cases": {s: {c["case"]: c for c in runs[s][1]["rows"][row_name]["per_case"]}
                       for s in seeds if runs[s][1] is not None}}


def _paired_case_delta(row: dict, full: dict, key: str) -> tuple[float | None, float]:
    """Mean over cases of (row - full) of a per-case score over the seeds both ran, and twice its standard error."""
    seeds = sorted(set(row["_cases"]) & set(full["_cases"]))
    if not seeds:
        return None, 0.0
    cases = sorted(set.intersection(*(set(row["_cases"][s]) & set(full["_cases"][s]) for s in seeds)))
    deltas = np.array([np.mean([row["_cases"][s][c][key] - full["_cases"][s][c][key] for s in seeds]) for c in cases])
    if deltas.size == 0:
        return None, 0.0
    se = float(deltas.std(ddof=1) / np.sqrt(deltas.size)) if deltas.size > 1 else 0.0
    return float(deltas.mean()), 2.0 * se


def table2_rows(results: Mapping[str, Mapping[int, tuple]], *, sample_steps: int) -> list[dict]:
    """Table 2: per variant ("full", "no_bapmg", ...; each {seed: (paired metrics, alignment scores)}) FID, KID,
    uptake and volume (means over seeds, sd over seeds), DSC and NSD (means, sd over cases), the verdict
    against the full model (module docstring) and the paper's values."""
    row_name = f"tumorgen-{sample_steps}"
    summaries = {variant: _variant_summary(runs, row_name) for variant, runs in results.items() if runs}
    full = summaries.get("full")
    rows = []
    for variant in ("no_bapmg", "no_coarse", "no_fine", "no_vmr", "full"):  # the paper's order
        if variant not in summaries:
            continue
        s = summaries[variant]
        verdict = "–"
        if full is not None and variant != "full":
            floor_fid = max([spread(f, "Avg") for f in full["_floors"]] or [0.0])
            floor_kid = max([spread(f, "KID_Avg") for f in full["_floors"]] or [0.0])
            noise_fid = max(floor_fid, _sd(s["_fid"]), _sd(full["_fid"]))
            noise_kid = max(floor_kid, _sd(s["_kid"]), _sd(full["_kid"]))
            parts = [_judge("FID", _minus(s["FID"], full["FID"]), noise_fid, higher_is_worse=True),
                     _judge("KID", _minus(s["KID"], full["KID"]), noise_kid, higher_is_worse=True)]
            for key in ("DSC", "NSD"):
                delta, noise = _paired_case_delta(s, full, key)
                parts.append(_judge(key, delta, noise, higher_is_worse=False))
            verdict = _verdict(parts)
        paper = published.TABLE2[variant]
        rows.append({**{k: v for k, v in s.items() if not k.startswith("_")}, "ablation": VARIANT_NAMES[variant],
                     "verdict": verdict, "paper_FID": paper["FID"], "paper_DSC": paper["DSC"],
                     "paper_NSD": paper["NSD"]})
    return rows


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def table3_rows(main: Mapping | None, ddpm: Mapping | None, speed: Mapping) -> list[dict]:
    """Table 3: DiffTumor DDPM-50 and DDIM-50, TumorGen RFM-50, -10, -4, -2: the speed harness's seconds
    (batch 1, and per batch and per sample at its batch) beside the protocol's FID/KID and seconds at the
    same step counts (none when the protocol ran the baselines at other step counts)."""
    entries = (("DiffTumor", "DDPM", 50, "ddpm-50", ddpm, "difftumor-ddpm-50"),
               ("DiffTumor", "DDIM", 50, "ddim-50", main, "difftumor-ddim-50"),
               *(("TumorGen", "RFM", n, f"rfm-{n}", main, f"tumorgen-{n}") for n in (50, 10, 4, 2)))
    rows = []
    for method, sampler, steps, key, metrics, row_name in entries:
        timing = speed.get(key) or {}
        row = (protocol_row(metrics, row_name) if metrics is not None else None) or {}
        paper = published.TABLE3.get(key, {})
        rows.append({"method": method, "sampling": f"{sampler}-{steps}", "batch1_s": timing.get("batch1_s"),
                     "batch_s": timing.get("batch_s"), "batch_per_sample_s": timing.get("batch_per_sample_s"),
                     "batch": timing.get("batch"), "FID": row.get("Avg"), "KID": row.get("KID_Avg"),
                     "protocol_s": row.get("seconds_per_sample"), "paper_FID": paper.get("FID"),
                     "paper_s": paper.get("seconds")})
    return rows

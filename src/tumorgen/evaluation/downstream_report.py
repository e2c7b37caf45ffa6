"""The downstream study's report: the table's rows, the paired comparison with real, the plot, the README."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from tumorgen.evaluation.tables import Column
from tumorgen.io.atomic import atomic_path

COLUMNS = (
    Column("n real", "n_real", "{}"),
    Column("arm", "arm", "{}"),
    Column("synthetic", "n_synthetic", "{}"),
    Column("seeds", "seeds", "{}"),
    Column("DSC", "DSC", "{:.3f}", std_key="DSC_sd"),
    Column("NSD", "NSD", "{:.3f}", std_key="NSD_sd"),
    Column("ΔDSC vs real", "dDSC", "{:.3f}", std_key="dDSC_sd"),
    Column("p (DSC)", "p_DSC", "{:.3g}"),
    Column("better/worse", "better_worse", "{}"),
    Column("ΔNSD vs real", "dNSD", "{:.3f}", std_key="dNSD_sd"),
    Column("p (NSD)", "p_NSD", "{:.3g}"),
    Column("healthy FP", "healthy_fp", "{:.2f}"),
    Column("note", "note", "{}"),
)


def _paired(arm_cells: list[dict], real_cells: dict[int, dict], key: str) -> dict:
    """Per test case, the arm's score minus real's (same seed), averaged over seeds; mean, sd, Wilcoxon p."""
    diffs: dict[str, list[float]] = {}
    for cell in arm_cells:
        base = real_cells.get(cell["seed"])
        if base is None:
            continue
        for case, score in cell["per_case"].items():
            if case in base["per_case"]:
                diffs.setdefault(case, []).append(score[key] - base["per_case"][case][key])
    if not diffs:
        return {}
    d = np.array([np.mean(v) for v in diffs.values()])
    out = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if d.size > 1 else 0.0,
           "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "p": None}
    if d.size >= 2:
        if not np.any(d != 0):
            out["p"] = 1.0
        else:
            from scipy.stats import wilcoxon

            out["p"] = float(wilcoxon(d, zero_method="zsplit").pvalue)
    return out


def summary_rows(cells: list[dict], *, arms: list[str], n_values: list[int], skipped: dict[str, str]) -> list[dict]:
    """One row per (n, arm): mean ± sd over seeds, and the paired comparison with real."""
    rows = []
    for n in n_values:
        real_cells = {c["seed"]: c for c in cells if c["arm"] == "real" and c["n_real"] == n}
        for arm in arms:
            if arm in skipped:
                rows.append({"n_real": n, "arm": arm, "note": skipped[arm]})
                continue
            mine = sorted((c for c in cells if c["arm"] == arm and c["n_real"] == n), key=lambda c: c["seed"])
            if not mine:
                continue
            row = {"n_real": n, "arm": arm, "seeds": len(mine)}
            counts = sorted({c["n_synthetic"] for c in mine})
            row["n_synthetic"] = counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            for key in ("DSC", "NSD"):
                per_seed = np.array([np.mean([s[key] for s in c["per_case"].values()]) if c["per_case"] else np.nan
                                     for c in mine])
                row[key] = float(np.mean(per_seed))
                row[f"{key}_sd"] = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else 0.0
                if arm != "real":
                    paired = _paired(mine, real_cells, key)
                    if paired:
                        row[f"d{key}"], row[f"d{key}_sd"], row[f"p_{key}"] = paired["mean"], paired["sd"], paired["p"]
                        if key == "DSC":
                            row["better_worse"] = f"{paired['better']}/{paired['worse']}"
            healthy = [c["healthy_predicted_voxels"] for c in mine if c["healthy_predicted_voxels"]]
            if healthy:
                row["healthy_fp"] = float(np.mean([np.mean([v > 0 for v in h.values()]) for h in healthy]))
            failed = sum(c["n_synthetic_failed"] for c in mine)
            empty = sum(1 for c in mine for s in c["synthetic"] if s.get("new_voxels") == 0)
            notes = ([f"{failed} synthetic samples refused by the generator (left out)"] if failed else []) + (
                [f"{empty} synthetic samples with an empty new mask (kept: the generator made no tumor)"]
                if empty else [])
            if notes:
                row["note"] = "; ".join(notes)
            rows.append(row)
    return rows


def write_plot(path: Path, rows: list[dict], *, arms: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("DSC", "NSD")):
        for arm in arms:
            points = [(r["n_real"], r[key], r.get(f"{key}_sd", 0.0)) for r in rows
                      if r["arm"] == arm and r.get(key) is not None]
            if not points:
                continue
            n, mean, sd = (np.array(v, dtype=float) for v in zip(*points))
            ax.errorbar(n, mean, yerr=sd, marker="o", capsize=3, label=arm)
        ax.set_xlabel("real training cases")
        ax.set_ylabel(f"{key} (mean ± sd over seeds)")
        ax.set_title(f"{key} on the real test cases", fontsize=9)
        ax.set_xticks(sorted({r["n_real"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def machine() -> dict:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "load_average_at_start": list(load) if load else None}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def readme_text(*, command: str, settings: dict, info: dict, notes: list[str], table: str, seconds: float,
                cells: list[dict]) -> str:
    per_cell = [c["seconds"] for c in cells if "seconds" in c]
    train_s = np.median([s["train"] for s in per_cell]) if per_cell else float("nan")
    all_cells_min = sum(sum(s.values()) for s in per_cell) / 60
    lines = [
        "# Downstream study: segmenters trained with and without synthetic tumors",
        "",
        "```",
        command,
        "```",
        "",
        f"- data: `{settings['data']}` ({settings['n_train']} train / {settings['n_test_tumor']} test cases with a "
        f"tumor, {settings['n_test_healthy']} healthy test cases)",
        f"- arms: {', '.join(settings['arms'])}; real cases n: {', '.join(str(n) for n in settings['n_real'])}; "
        f"seeds: {', '.join(str(s) for s in settings['seeds'])}",
        f"- synthetic cases per cell: `{settings['synthetic']}` (modes {', '.join(settings['modes'])})",
        f"- segmenter budget per cell: {settings['seg']['steps']} steps, batch {settings['seg']['batch']}, "
        f"lr {settings['seg']['lr']}, MONAI UNet channels {settings['seg']['channels']}, roi {settings['seg']['roi']} "
        f"({settings['seg'].get('foreground', 0):.2f} of the patches centered on a tumor when smaller than the volume)",
        f"- generators: {json.dumps(settings['generators'])}",
        f"- NSD tolerance: {settings['nsd_tolerance_mm']} mm",
        f"- machine: {info['processor']}, {info['cpus']} CPUs, torch {info['torch']} with {info['torch_threads']} "
        f"threads, CUDA {info['cuda']}, load average at start {info['load_average_at_start']}",
        f"- code: {settings.get('git') or 'unknown commit'}; wall time of this call {seconds / 60:.1f} min; "
        f"median segmenter training per cell {train_s:.1f} s, all cells {all_cells_min:.1f} min (over every call)",
        "",
        "ΔDSC/ΔNSD: per test case, the arm's score minus real's at the same seed and n, averaged over seeds; "
        "mean ± sd over test cases, two-sided Wilcoxon signed-rank p, test cases better/worse.",
        "",
        table,
    ]
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


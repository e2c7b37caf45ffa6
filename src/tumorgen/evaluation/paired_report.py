"""What the paired protocol shows a reader: its table's columns, the montage and the printed summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorgen.evaluation.tables import FID_WITH_SPREAD, Column, render_markdown
from tumorgen.synthesis.montage import Panel, write_montage

MONTAGE_CROP = 0.5  # the montage crop: the box plus this fraction of its extent a side

UPTAKE_COLUMNS = (  # the generated tumor's SUV against the real one's in the same box
    Column("mean SUV ratio", "mean_ratio_median", "{:.2f}"),
    Column("mean ±20%", "mean_within", "{:.0%}"),
    Column("median mean SUV gen/real", "mean_suv_of_medians", "{:.2f}"),
    Column("max SUV ratio", "max_ratio_median", "{:.2f}"),
)
SHAPE_COLUMNS = (  # its mask against the real mask
    Column("volume ratio", "volume_ratio_median", "{:.2f}"),
    Column("volume ±30%", "volume_within", "{:.0%}"),
    Column("one component", "one_component", "{:.0%}"),
    Column("non-empty", "nonempty", "{:.0%}"),
)
COLUMNS = (
    Column("method", "method", "{}"),
    *FID_WITH_SPREAD,
    *UPTAKE_COLUMNS,
    *SHAPE_COLUMNS,
    Column("seam step (SUV)", "seam_step", "{:.3f}"),
    Column("s/sample", "seconds_per_sample", "{:.3f}"),
    Column("n", "n_cases", "{}"),
)


def write_paired_montage(path: Path, cases: list, rows: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> Path:
    """Rows: real, then each method; column groups: cases, each cropped around its box (grown by half its
    extent a side), gray up to the real crop's SUV p99; real masks red, generated ones green."""
    grid = [[Panel(image=case.suv, mask=case.mask, box=case.box) for case in cases]]
    grid += [[Panel(image=suv, mask=mask, box=case.box, contour="lime") for case, (suv, mask) in zip(cases, outs)]
             for outs in rows.values()]
    return write_montage(path, grid, row_labels=["real", *rows], group_titles=[case.name for case in cases],
                         scale="column", crop=MONTAGE_CROP, panel_inches=1.35, colorbar=None,
                         title="paired protocol: real (red mask) and each method (green mask) in the erased box "
                               "(dashed); inverted gray, 0 to SUV p99 of the real crop")


def summary_lines(metrics: dict) -> list[str]:
    """What the command prints: a heading, the table, the fixed costs and the notes."""
    protocol = metrics["protocol"]
    lines = [f"paired protocol on {metrics['split']} ({len(metrics['cases'])} cases), {protocol['features']} "
             f"features, {protocol['slices_per_plane']} tumor-centred slices per plane; floor = real test vs "
             f"{(metrics['floor'] or {}).get('n_generated', '-')} real train cases"]
    lines += render_markdown(COLUMNS, metrics["table"]).splitlines()
    for method, cost in metrics["fixed_cost"].items():
        lines.append(f"{method} fixed cost (not in s/sample): load {cost['load_s']:.2f} s + first call "
                     f"({cost['first_call']}) {cost['first_call_s']:.2f} s")
    if metrics.get("radiomics"):
        c = metrics["radiomics"]["comparison"]
        cov = c["features"]["cov"]
        lines.append("radiomics (radiomics.md): features within the real-vs-real floor: " + ", ".join(
            f"{name} {count} of {c['n_features']}" for name, count in c["within_floor"].items()))
        lines.append(f"  CoV median: real {cov['real_median']:.2f}, " + ", ".join(
            f"{name} {m['median']:.2f}" for name, m in cov["methods"].items()) + "; hot rim share: " + ", ".join(
            f"{name} {share:.0%}" for name, share in c["rim_share"].items() if share is not None))
    for name, result in (metrics.get("uptake_request") or {}).items():
        overall = result["overall"]
        lines.append(f"uptake on request (uptake_request.md), {name}: {overall['within']:.0%} within "
                     f"{result['tolerance']:.0%} of the asked SUVmean over {overall['n']} asks, slope "
                     f"{overall['slope']:.2f}, {overall['empty']} empty"
                     + ("" if metrics.get("match_uptake") is False else " (scaled to the ask: uptake_match)"))
    lines += [f"note: {note}" for note in metrics["notes"]]
    return lines

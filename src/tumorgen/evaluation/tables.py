"""The paper's three tables, as Markdown and CSV, from plain result dictionaries.

Table 1: per-plane FID (and KID) per method, on middle slices and on tumor-center slices, with the
real-vs-real floor as its own row. Table 2: ablations with FID, DSC and NSD. Table 3: sampler, steps,
FID and seconds per sample. Rows are dicts whose keys are the ones `fid_per_plane` and
`segmentation_table` return, so results flow into tables without renaming. Markdown is for reading
(mean +- std in one cell); CSV keeps every number in its own column for other tools.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tumorgen.io.atomic import write_text

FLOOR_NAME = "real vs real (floor)"


@dataclass(frozen=True)
class Column:
    """One table column.

    Args:
        header: the column title.
        key: the row dict key holding the value.
        fmt: format for numbers ("{}" for text).
        std_key: a key whose value is shown as "+- std" in Markdown (and as its own CSV column).
    """

    header: str
    key: str
    fmt: str = "{:.3f}"
    std_key: str | None = None


METHOD = Column("method", "method", "{}")
# FID and KID per plane (A/S/C) and their average, each with the precision the paper prints
FID = {plane: Column(f"FID({plane})", plane, "{:.2f}") for plane in ("A", "S", "C", "Avg")}
KID = {plane: Column(f"KID({plane})", f"KID_{plane}", "{:.4f}") for plane in ("A", "S", "C", "Avg")}
# FID per plane and KID(Avg) of a floor over random draws ("<key>_spread": their sd), or of one set
FID_WITH_SPREAD = (*(Column(f"FID({p})", p, "{:.1f}", std_key=f"{p}_spread") for p in ("A", "S", "C", "Avg")),
                   Column("KID(Avg)", "KID_Avg", "{:.4f}", std_key="KID_Avg_spread"))

TABLE1_COLUMNS = (
    METHOD,
    Column("slices", "slices", "{}"),
    *FID.values(),
    *KID.values(),
    Column("n real", "n_real", "{}"),
    Column("n generated", "n_generated", "{}"),
)

TABLE2_COLUMNS = (
    Column("ablation", "ablation", "{}"),
    FID["Avg"],
    KID["Avg"],
    Column("DSC", "DSC", "{:.3f}", std_key="DSC_std"),
    Column("NSD", "NSD", "{:.3f}", std_key="NSD_std"),
)

TABLE3_COLUMNS = (
    METHOD,
    Column("sampler", "sampler", "{}"),
    Column("steps", "steps", "{}"),
    FID["Avg"],
    Column("seconds per sample", "seconds_per_sample", "{:.3f}"),
)


def table1_rows(
    middle: Mapping[str, Mapping] | None = None,
    tumor: Mapping[str, Mapping] | None = None,
    *,
    floor_middle: Mapping | None = None,
    floor_tumor: Mapping | None = None,
) -> list[dict]:
    """Rows of Table 1: each method's `fid_per_plane` result, middle slices first, then tumor-center.

    Args:
        middle: {method: fid_per_plane(..., where="middle") result}.
        tumor: {method: fid_per_plane(..., where="tumor") result}.
        floor_middle, floor_tumor: `real_floor` results, added as a "real vs real (floor)" row.
    """
    rows = []
    for slices, results, floor in (("middle", middle, floor_middle), ("tumor-center", tumor, floor_tumor)):
        for method, result in (results or {}).items():
            rows.append({**result, "method": method, "slices": slices})
        if floor is not None:
            rows.append({**floor, "method": FLOOR_NAME, "slices": slices})
    return rows


def table2_rows(ablations: Mapping[str, Mapping]) -> list[dict]:
    """Rows of Table 2: {ablation name: a dict merging its FID result and its `segmentation_table`}."""
    return [{**result, "ablation": name} for name, result in ablations.items()]


def table3_rows(entries: Sequence[Mapping]) -> list[dict]:
    """Rows of Table 3: dicts with "method", "sampler", "steps", "Avg" (FID) and "seconds_per_sample"."""
    return [dict(entry) for entry in entries]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value) if fmt != "{}" else str(value)


def render_markdown(columns: Sequence[Column], rows: Sequence[Mapping]) -> str:
    """A GitHub Markdown table; missing values show as "–", std as "mean ± std".

    A "|" in a header or a cell is escaped, or it would split the column and shift the row.
    """
    lines = ["| " + " | ".join(c.header.replace("|", "\\|") for c in columns) + " |",
             "|" + "|".join("---" if c.fmt == "{}" else "---:" for c in columns) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            text = _cell(row.get(c.key), c.fmt)
            if c.std_key is not None and row.get(c.std_key) is not None and text != "–":
                text += " ± " + _cell(row[c.std_key], c.fmt)
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(columns: Sequence[Column], rows: Sequence[Mapping]) -> str:
    """CSV with one column per key (std columns after their mean); missing values are empty."""
    keys, headers = [], []
    for c in columns:
        keys.append(c.key)
        headers.append(c.header)
        if c.std_key is not None:
            keys.append(c.std_key)
            headers.append(f"{c.header} std")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row[k] for k in keys])
    return buffer.getvalue()


def write_table(columns: Sequence[Column], rows: Sequence[Mapping], stem: str | Path) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.csv` atomically; returns both paths."""
    stem = Path(stem)
    md = write_text(stem.with_name(stem.name + ".md"), render_markdown(columns, rows))
    csv_path = write_text(stem.with_name(stem.name + ".csv"), render_csv(columns, rows))
    return md, csv_path

"""The three tables render with the paper's columns, in Markdown and CSV, written atomically."""

from __future__ import annotations

import csv

from tumorgen.evaluation.tables import (
    FLOOR_NAME,
    TABLE1_COLUMNS,
    TABLE2_COLUMNS,
    TABLE3_COLUMNS,
    render_csv,
    render_markdown,
    table1_rows,
    table2_rows,
    table3_rows,
    write_table,
)

FID = {"A": 50.0, "S": 60.0, "C": 70.0, "Avg": 60.0, "KID_A": 0.01, "KID_S": 0.02, "KID_C": 0.03,
       "KID_Avg": 0.02, "n_real": 10, "n_generated": 12}


def test_table1_has_per_plane_columns_and_floor_rows(tmp_path):
    rows = table1_rows({"TumorGen": FID, "SynTumor": FID}, {"TumorGen": FID},
                       floor_middle={**FID, "Avg": 40.0}, floor_tumor=FID)
    assert [(r["method"], r["slices"]) for r in rows] == [
        ("TumorGen", "middle"), ("SynTumor", "middle"), (FLOOR_NAME, "middle"),
        ("TumorGen", "tumor-center"), (FLOOR_NAME, "tumor-center")]
    markdown = render_markdown(TABLE1_COLUMNS, rows)
    header = markdown.splitlines()[0]
    for title in ("method", "FID(A)", "FID(S)", "FID(C)", "FID(Avg)", "KID(Avg)"):
        assert f" {title} " in header
    assert "| TumorGen | middle | 50.00 | 60.00 | 70.00 | 60.00 | 0.0100 |" in markdown
    assert "| real vs real (floor) | middle | 50.00 | 60.00 | 70.00 | 40.00 |" in markdown
    md_path, csv_path = write_table(TABLE1_COLUMNS, rows, tmp_path / "table1")
    assert md_path.read_text() == markdown
    parsed = list(csv.DictReader(csv_path.open()))
    assert len(parsed) == 5 and float(parsed[0]["FID(Avg)"]) == 60.0
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_table2_shows_mean_and_std_and_missing_values():
    rows = table2_rows({"full": {**FID, "DSC": 0.694, "DSC_std": 0.1, "NSD": 0.741, "NSD_std": 0.05},
                        "no VMR": {"Avg": 54.279}})
    markdown = render_markdown(TABLE2_COLUMNS, rows)
    assert markdown.splitlines()[0] == "| ablation | FID(Avg) | KID(Avg) | DSC | NSD |"
    assert "| full | 60.00 | 0.0200 | 0.694 ± 0.100 | 0.741 ± 0.050 |" in markdown
    assert "| no VMR | 54.28 | – | – | – |" in markdown
    text = render_csv(TABLE2_COLUMNS, rows)
    assert text.splitlines()[0] == "ablation,FID(Avg),KID(Avg),DSC,DSC std,NSD,NSD std"
    assert text.splitlines()[2] == "no VMR,54.279,,,,,"


def test_table3_columns():
    rows = table3_rows([{"method": "TumorGen", "sampler": "RFM", "steps": 10, "Avg": 55.862,
                         "seconds_per_sample": 0.218}])
    markdown = render_markdown(TABLE3_COLUMNS, rows)
    assert markdown.splitlines()[0] == "| method | sampler | steps | FID(Avg) | seconds per sample |"
    assert "| TumorGen | RFM | 10 | 55.86 | 0.218 |" in markdown


def test_a_pipe_in_a_header_or_cell_does_not_split_its_column():
    """An unescaped "|" in a header once shifted every later column of the radiomics panel by one."""
    from tumorgen.evaluation.tables import Column

    columns = [Column("feature", "feature", "{}"), Column("floor |d| mean / max", "floor", "{}"),
               Column("value", "value", "{:.1f}")]
    markdown = render_markdown(columns, [{"feature": "a|b", "floor": "0.1 / 0.2", "value": 3.0}])
    unescaped = [line.replace("\\|", "") for line in markdown.splitlines()]
    assert {line.count("|") for line in unescaped} == {4}  # three columns in the header, rule and row
    assert "floor \\|d\\| mean / max" in markdown.splitlines()[0]

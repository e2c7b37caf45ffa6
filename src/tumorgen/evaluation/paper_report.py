"""OUT of the paper's experiments: the three tables (.md and .csv), the figures, summary.json and README.md.

Everything in OUT is written from the runs' own outputs (nothing by hand): each of our tables with the
paper's published values beside it, the command, the machine, every model's steps and every job's wall
time. The reading of the numbers belongs in a hand-written `reading.md` beside it, after a run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tumorgen.data.prepared import load_prepared
from tumorgen.evaluation.paper_rows import (
    PUBLISHED_TABLE1_COLUMNS, TABLE1_COLUMNS, TABLE2_COLUMNS, TABLE3_COLUMNS, published_table1_rows, table1_rows,
    table2_rows, table3_rows,
)
from tumorgen.evaluation.tables import render_markdown, write_table
from tumorgen.io.atomic import atomic_path, write_json, write_text


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_outputs(options, results: dict, info: dict) -> dict:
    """Write OUT's tables, figures, summary.json and README.md; return the summary."""
    out, work, parts = Path(options.out), options.work_dir, options.parts
    tables = {}
    if "table1" in parts:
        tables["table1"] = table1_rows(results["main"], sample_steps=options.sample_steps,
                                       baseline_steps=options.baseline_steps)
        write_table(TABLE1_COLUMNS, tables["table1"], out / "table1")
        write_table(PUBLISHED_TABLE1_COLUMNS, published_table1_rows(), out / "table1_paper")
        _copy(work / "paired" / "main" / "montage.png", out / "table1_montage.png")
        if options.radiomics:
            _copy(work / "paired" / "main" / "radiomics.md", out / "table1_radiomics.md")
    if "table2" in parts:
        tables["table2"] = table2_rows(results["table2"], sample_steps=options.sample_steps)
        write_table(TABLE2_COLUMNS, tables["table2"], out / "table2")
    if "table3" in parts:
        tables["table3"] = table3_rows(results["main"], results["ddpm"], results["speed"])
        write_table(TABLE3_COLUMNS, tables["table3"], out / "table3")
    if "fig4" in parts:
        _copy(work / "healthy" / "montage.png", out / "fig4_healthy.png")
        for suffix in (".md", ".csv"):
            _copy(work / "healthy" / f"table{suffix}", out / f"fig4_healthy{suffix}")
    summary = {**info, "tables": tables, "speed": results.get("speed"),
               "healthy": (results.get("healthy") or {}).get("summary"),
               "protocol_floor": (results.get("main") or {}).get("floor")}
    write_json(out / "summary.json", summary)
    write_text(out / "README.md", render_readme(options, summary, results))
    return summary


def _minutes(ledger: dict, name: str) -> str:
    seconds = (ledger.get(name) or {}).get("seconds")
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def render_readme(options, summary: dict, results: dict) -> str:
    """README.md: how it was made, the training budget, each table beside the paper's, the figures."""
    m, ledger, tables = summary["machine"], summary["ledger"], summary["tables"]
    dataset = load_prepared(options.data)
    n_test = sum(not c.healthy for c in dataset.split("test"))
    lines = [
        "# The paper's experiments on real PET, regenerated",
        "",
        "Written by `benchmarks/paper_tables.py` from the runs it trained (nothing here is typed by hand; a "
        "reading of the numbers goes in `reading.md`). Made by, from the repository root:",
        "",
        f"    {summary['command'] or 'python benchmarks/paper_tables.py ...'}",
        "",
        f"- Data: `{options.data}`: {len(dataset.split('train'))} training and {len(dataset.split('test'))} test "
        f"cases ({n_test} with a tumor, judged by the paired protocol).",
        f"- Machine: {m['platform']}, {m['cores_usable']} usable CPU cores (torch threads: {m['torch_threads']}), "
        f"torch {m['torch']}, GPU: {m['cuda'] or 'none'}; load average at the start "
        f"{', '.join(f'{v:.1f}' for v in m['load_average_at_start'] or [])}.",
        f"- Config `{options.config}`; this call took {summary['wall_minutes']:.1f} minutes (jobs done by earlier "
        "calls are not in it; the minutes per job below add up every call).",
        "- Protocol: `tumorgen evaluate-paired` on the test split: each real tumor's box (tight + 2 voxels) is "
        "erased and every method regenerates it from the same erased scan; FID per plane and KID on "
        f"tumor-centred slices ({options.features} features) beside the real-vs-real floor (the test cases "
        "against as many training cases, mean ± sd over 5 draws); protocol seed "
        f"{options.seeds[0]} (Table 2's repeats: {', '.join(map(str, options.seeds[1:])) or 'none'}).",
        "- The paper's numbers are Hecktor / AutoPET, FID on whole-crop middle slices, a GPU: compare orders "
        "and gaps with ours, not values.",
        "",
    ]
    if (Path(options.out) / "reading.md").exists():
        lines += ["**What the tables show** (what beats what beyond the noise, and what does not): "
                  "[reading.md](reading.md), written by hand after the run.", ""]
    lines += [
        "## Training, bounded by steps",
        "",
        "| run | steps (budget) | wall minutes | folder |",
        "|---|---:|---:|---|",
    ]
    for name, s in summary["steps"].items():
        minutes = "reused" if s["reused"] else _minutes(ledger, f"train {name}")
        lines.append(f"| {name} | {s['steps']} ({s['budget']}) | {minutes} | `{s['run']}` |")
    lines += ["", "| evaluation job | wall minutes |", "|---|---:|"]
    lines += [f"| {name} | {_minutes(ledger, name)} |" for name in ledger if not name.startswith("train ")]
    if "table1" in tables:
        lines += ["", "## Table 1: every method on the same erased boxes", "",
                  "FID per plane (the floor: mean ± sd over its draws) and KID(Avg); a method's gap to TumorGen "
                  "is named when it exceeds the floor's spread. Beside ours, the paper's FID(Avg).", "",
                  render_markdown(TABLE1_COLUMNS, tables["table1"]),
                  "The paper's Table 1:", "", render_markdown(PUBLISHED_TABLE1_COLUMNS, published_table1_rows()),
                  "Every method in each case's box: `table1_montage.png` (real, then each method)."
                  + (" Each method's tumors up close (IBSI radiomic panel by MIRP, beside the real tumors and "
                     "the real-vs-real floor): `table1_radiomics.md`." if options.radiomics else ""), ""]
    if "table2" in tables:
        lines += ["## Table 2: ablations (each trained with the same steps on the same VAE)", "",
                  f"TumorGen RFM-{options.sample_steps}. FID and KID: mean ± sd over the protocol seeds listed; "
                  "mean SUV and volume: the median per-case ratio to the real tumor (mean over seeds); DSC and "
                  f"NSD (at 2 mm): the alignment segmenter (`train-seg`, {options.seg_steps} steps) on each output, "
                  "its mask kept inside the box, against the generated mask (mean ± sd over cases). 'Beyond the "
                  "noise': FID/KID differences larger than the floor's spread (or the seeds' sd), DSC/NSD mean "
                  "per-case differences larger than twice their standard error.", "",
                  render_markdown(TABLE2_COLUMNS, tables["table2"])]
    if "table3" in tables:
        speed = results["speed"]["meta"]
        lines += ["## Table 3: samplers on one backbone", "",
                  f"Seconds from the speed harness (`tumorgen.evaluation.speed`: the `{speed['preset']}` networks, "
                  f"untrained, a {speed['size']}^3 grid, on {speed['device']}, torch threads: {speed['threads']}, "
                  f"median of {speed['repeats']} after a warm-up; batch 1 and batch {options.speed_batch}); FID/KID "
                  "and the protocol's seconds per sample (the trained models, the whole synthesis call) from the "
                  "paired protocol at the same step counts.", "", render_markdown(TABLE3_COLUMNS, tables["table3"])]
    if "fig4" in options.parts:
        h = summary["healthy"]
        lines += ["## Fig. 4: tumors in healthy tissue of the test scans", "",
                  f"TumorGen RFM-{options.sample_steps}, tumors per test scan: {options.healthy_per_case}, each box "
                  f"a training box size, >= {options.clearance_mm:g} mm from the real tumor and from hot spots, "
                  f"mostly inside the body: {h['placed']} of {h['asked']} placed ({h['no_room']} without room), "
                  f"{h['passing']} pass the demo's four tumor checks (`fig4_healthy.md`).", "",
                  "![healthy-tissue placements](fig4_healthy.png)", ""]
    return "\n".join(lines) + "\n"

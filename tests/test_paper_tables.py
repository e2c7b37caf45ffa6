"""The paper's experiments end to end (`tumorgen.evaluation.paper`, `benchmarks/paper_tables.py`) on the debug
preset with a few steps per model: every model trained once through the CLI, every table, figure and the
README written, nothing run again on a second call, a raised budget resumed, the plan printed by
--dry-run, and bad input refused in one sentence."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import write_tiny_prep
from tumorgen.cli import main as cli_main
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.paper import dry_run, run_paper
from tumorgen.evaluation.paper_plan import PaperOptions, check_options, trainings
from tumorgen.evaluation.paper_rows import needs_repeat, table2_rows

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """Runs each `tumorgen` command in this process (as the CLI would in its own), remembering them."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv, log: Path) -> int:
        self.calls.append(list(argv))
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh, redirect_stdout(fh), redirect_stderr(fh):
            return cli_main(list(argv))


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    """9 cases of 16^3: 3 test tumors, 5 train tumors and a healthy train case."""
    return write_tiny_prep(tmp_path_factory.mktemp("paper") / "prep", n_cases=9, seed=3, n_test=3)


def _options(prep, root: Path, **changes) -> PaperOptions:
    base = PaperOptions(data=prep, out=root / "out", config="debug", steps=2, vae_steps=2, seg_steps=2, seg_batch=2,
                        seeds=(0, 1), features="pixels", device="cpu", speed_batch=2, speed_repeats=1,
                        healthy_per_case=1, clearance_mm=4.0)
    return replace(base, **changes)


@pytest.mark.slow
def test_every_table_from_one_prep_cache_and_nothing_twice(prep, tmp_path, one_thread):
    radiomics = importlib.util.find_spec("mirp") is not None  # `make test` installs it
    options = _options(prep, tmp_path, radiomics=radiomics)
    recorder = Recorder()
    summary = run_paper(options, command="python benchmarks/paper_tables.py ...", runner=recorder, say=lambda _: None)
    trained = [c[0] + (" " + c[2] if c[0] == "train-baseline" else "") for c in recorder.calls
               if c[0].startswith("train")]
    assert trained == ["train-vae", "train", "train", "train", "train", "train", "train-baseline difftumor",
                       "train-baseline bld", "train-baseline medfusion", "train-baseline hagan", "train-seg"]
    assert {name: s["steps"] for name, s in summary["steps"].items()} == {
        "vae": 2, "tumorgen": 2, "no_bapmg": 2, "no_coarse": 2, "no_fine": 2, "no_vmr": 2, "difftumor": 2, "bld": 2,
        "medfusion": 2, "hagan": 2, "seg": 2}
    out = options.out
    for name in ("README.md", "summary.json", "table1.md", "table1.csv", "table1_paper.md", "table1_montage.png",
                 "table2.md", "table2.csv", "table3.md", "table3.csv", "fig4_healthy.png", "fig4_healthy.md"):
        assert (out / name).is_file(), name
    table1 = summary["tables"]["table1"]
    assert [r["method"].split(" ")[0] for r in table1] == ["real", "HA-GAN", "MedFusion", "BLD", "SynTumor",
                                                           "DiffTumor", "TumorGen"]
    assert all(r["Avg"] > 0 for r in table1) and table1[-1]["paper_hecktor"] == 52.035
    table2 = summary["tables"]["table2"]
    assert [r["ablation"] for r in table2] == ["no BA-PMG", "no coarse constraint", "no fine constraint", "no VMR",
                                               "full model"]
    assert all(0 <= r["DSC"] <= 1 and r["verdict"] for r in table2)
    assert table2[-1]["seeds"] == ("0,1" if any(r["seeds"] == "0,1" for r in table2[:-1]) else "0")
    table3 = summary["tables"]["table3"]
    assert [r["sampling"] for r in table3] == ["DDPM-50", "DDIM-50", "RFM-50", "RFM-10", "RFM-4", "RFM-2"]
    assert all(r["batch1_s"] > 0 and r["batch_s"] > 0 for r in table3)
    assert all(r["FID"] is not None and r["protocol_s"] > 0 for r in table3)
    with open(out / "table3.csv") as fh:
        assert len(list(csv.reader(fh))) == 7
    readme = (out / "README.md").read_text()
    for words in ("python benchmarks/paper_tables.py", "## Table 1", "## Table 2", "## Table 3", "## Fig. 4",
                  "| seg | 2 (2) |", "The paper's Table 1", "fig4_healthy.png"):
        assert words in readme, words
    if radiomics:
        assert "table1_radiomics.md" in readme and "syntumor" in (out / "table1_radiomics.md").read_text()

    assert "reading.md" not in readme.split("Made by")[1]  # linked only once a reading is written

    (out / "reading.md").write_text("# Reading\n")
    again = Recorder()
    second = run_paper(options, runner=again, say=lambda _: None)
    assert again.calls == []
    assert json.dumps(second["tables"]) == json.dumps(summary["tables"])
    assert "[reading.md](reading.md)" in (out / "README.md").read_text()


def test_a_raised_budget_resumes_and_makes_the_figure_again(prep, tmp_path, one_thread):
    first = _options(prep, tmp_path, parts=("fig4",), steps=1, vae_steps=1)
    run_paper(first, runner=Recorder(), say=lambda _: None)
    healthy_stamp = json.loads((first.work_dir / "healthy.job.json").read_text())
    assert healthy_stamp["inputs"] == {"tumorgen": 1}
    recorder = Recorder()
    summary = run_paper(replace(first, steps=2, vae_steps=2), runner=recorder, say=lambda _: None)
    assert [c[0] for c in recorder.calls] == ["train-vae", "train"] and all("--resume" in c for c in recorder.calls)
    assert summary["steps"]["tumorgen"]["steps"] == 2
    assert json.loads((first.work_dir / "healthy.job.json").read_text())["inputs"] == {"tumorgen": 2}
    with pytest.raises(TumorGenError, match="more than the budget of 1"):
        run_paper(first, runner=Recorder(), say=lambda _: None)


def test_the_dry_run_lists_every_job_with_its_steps_and_runs_nothing(prep, tmp_path):
    options = _options(prep, tmp_path, steps=None, vae_steps=None)
    lines = dry_run(options)
    text = "\n".join(lines)
    assert "steps: VAE 4; TumorGen, each ablation and each baseline 4; MedFusion's VAE 4; segmenter 2" in text
    assert text.count("[new] train") == 11 and "--set ablate=no_vmr" in text and "train-seg" in text
    assert "[to run] paired main" in text and "[to run] healthy" in text and "[to run] speed" in text
    assert "--radiomics" not in text
    with_panel = "\n".join(dry_run(replace(options, radiomics=True)))
    panel_lines = [line for line in with_panel.splitlines() if "--radiomics" in line]
    assert len(panel_lines) == 1 and "paired/main " in panel_lines[0]  # Table 1's run alone
    assert not options.work_dir.exists()
    assert [j.name for j in trainings(check_options(replace(options, parts=("fig4",))))] == ["train vae",
                                                                                           "train tumorgen"]


def test_the_noise_rule_on_made_up_rows():
    floor = {"Avg_spread": 3.0, "KID_Avg_spread": 0.004}
    full = {"Avg": 50.0, "KID_Avg": 0.010}
    assert needs_repeat({"Avg": 52.0, "KID_Avg": 0.030}, full, floor)  # FID within the floor's spread
    assert not needs_repeat({"Avg": 60.0, "KID_Avg": 0.030}, full, floor)

    def run(fid, kid, dsc):
        return ({"table": [{"method": "tumorgen-10", "Avg": fid, "KID_Avg": kid}], "floor": floor},
                {"rows": {"tumorgen-10": {"DSC": sum(dsc) / 3, "DSC_std": 0.0, "NSD": 0.5, "NSD_std": 0.0,
                                          "per_case": [{"case": f"c{i}", "DSC": d, "NSD": 0.5}
                                                       for i, d in enumerate(dsc)]}}})

    rows = table2_rows({"full": {0: run(50.0, 0.010, [0.8, 0.7, 0.9])},
                        "no_vmr": {0: run(60.0, 0.011, [0.5, 0.4, 0.6])}}, sample_steps=10)
    assert rows[0]["verdict"] == "FID worse (+10.0), DSC worse (-0.300)"
    assert rows[1]["verdict"] == "–" and rows[1]["paper_FID"] == 52.035


def test_bad_input_is_one_sentence_and_the_script_exits_2_without_a_traceback(tmp_path, prep, monkeypatch):
    for changes, words in (({"parts": ("table9",)}, "--parts takes some of"),
                           ({"seeds": (0, 0)}, "--seeds must be distinct"),
                           ({"steps": 0}, "--steps must be a positive integer"),
                           ({"reuse": {"vae": tmp_path}}, "is not a finished run"),
                           ({"reuse": {"unet": tmp_path}}, "is not a run of the plan"),
                           ({"radiomics": True, "parts": ("table3",)}, "keep table1 in --parts")):
        with pytest.raises(TumorGenError, match=words):
            check_options(_options(prep, tmp_path, **changes))
    monkeypatch.setattr("tumorgen.evaluation.radiomics.mirp_available", lambda: False)
    with pytest.raises(TumorGenError, match="--radiomics needs MIRP"):  # before any training, not hours later
        check_options(_options(prep, tmp_path, radiomics=True))
    script = ROOT / "benchmarks" / "paper_tables.py"
    argv = [sys.executable, str(script), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--dry-run"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "is not a PREP cache" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

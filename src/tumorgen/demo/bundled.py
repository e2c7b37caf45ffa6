"""`tumorgen demo` (the default): the bundled model synthesizes tumors into real PET and into phantoms.

What a newcomer should see first is the product, not a training run: the model that ships in the
package grows tumors (1) in the box of each real sarcoma of the shipped example scans (the real tumor
is erased first, so the real one above and the synthetic one below can be compared) and (2) in the
lungs of healthy PET/CT phantoms (boxes found on CT). Every sample is judged by the demo's four
tumor checks (`evaluation.tumor_measures.tumor_check`), shown in montages and listed in `report.md`.
No training: a few minutes on 2 CPU cores, set-up included. `tumorgen demo --train` runs the
train-on-phantoms pipeline instead (`demo.run`).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tumorgen.api import TumorGen
from tumorgen.data.examples import example_cases, tumor_box
from tumorgen.data.phantom_layouts import write_phantom_dataset
from tumorgen.demo.montage import write_labelled_rows
from tumorgen.demo.quality import tumor_summary
from tumorgen.demo.report_bundled import render_bundled_report
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.tumor_measures import tumor_check
from tumorgen.io.atomic import write_text
from tumorgen.io.nifti import load_volume
from tumorgen.io.spacing import voxel_spacing
from tumorgen.synthesis.pipeline import derived_seed, write_outputs

PHANTOM_SEED_OFFSET = 101  # the demo's healthy phantoms are not the --train demo's (seed 0) phantoms


@dataclass
class DemoSample:
    """One synthetic tumor of the demo with its checks and statistics."""

    source: str  # "example" or "phantom"
    case: str
    k: int
    box: tuple[int, ...]
    seed: int
    seconds: float
    stats: dict
    check: dict
    real: dict | None = None  # the example's real tumor statistics, for comparison


@dataclass
class BundledDemoResult:
    out: Path
    model: dict
    samples: list[DemoSample] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(s.check["passes"] for s in self.samples)


def run_bundled_demo(*, out: str | Path = "demo_out", model: str | None = None, samples_per_case: int = 2,
                     phantoms: int = 3, seed: int = 0, progress: bool = True,
                     say: Callable[[str], None] | None = None) -> BundledDemoResult:
    """Synthesize with a ready model into the example scans and healthy phantoms; write montages and report.

    Args:
        out: the demo folder (its synthetic/ and pictures are replaced on every run).
        model: what `TumorGen.load` takes; None: the bundled default model.
        samples_per_case: tumors per scan.
        phantoms: healthy phantoms to write and synthesize into.
        seed: seeds the phantoms and every sample.
        progress: show progress bars.
        say: where the narrative goes (default: print).
    """
    from tqdm import tqdm


    say = say or (lambda text: print(text, flush=True))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TumorGenError(f"{out}: exists and is not a folder; choose another --out")
    cases = example_cases()
    if not cases:
        raise TumorGenError("no example scans are installed (tumorgen/examples); reinstall TumorGen")
    started = time.perf_counter()
    t0 = time.perf_counter()
    tg = TumorGen.load(model, device="cpu")
    result = BundledDemoResult(out=out, model=tg.model_record())
    result.seconds["load model"] = time.perf_counter() - t0
    say(f"TumorGen demo with the model {result.model['run']} (step {tg.run.step}), into {out}")

    t0 = time.perf_counter()
    scans = _phantom_scans(out, count=phantoms, seed=seed + PHANTOM_SEED_OFFSET, say=say)
    result.seconds["write phantoms"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows_examples, rows_phantoms = [], []
    total = (len(cases) + len(scans)) * samples_per_case
    with tqdm(total=total, desc="synthesize", unit="tumor", disable=not progress) as bar:
        for case in cases:
            rows_examples += _synthesize_example(tg, case, out, result, samples_per_case, seed, bar.update)
        for name, pet, ct in scans:
            rows_phantoms += _synthesize_phantom(tg, name, pet, ct, out, result, samples_per_case, seed, bar.update)
    result.seconds["synthesize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    write_labelled_rows(out / "montage_examples.png", rows_examples, by_case=True,
                        title="Real sarcomas, then tumors grown in their erased box, each case on its real "
                              "tumor's SUV scale\nred = mask, dashed = box")
    write_labelled_rows(out / "montage_phantoms.png", rows_phantoms,
                        title="Tumors grown in the lungs of healthy phantoms\nred = mask, dashed = box")
    result.seconds["montages and report"] = time.perf_counter() - t0
    result.seconds["total"] = time.perf_counter() - started
    write_text(out / "report.md", render_bundled_report(result))
    say(closing_words(result))
    return result


def _phantom_scans(out: Path, *, count: int, seed: int, say) -> list[tuple[str, Path, Path]]:
    """(name, SUV path, CT path) of `count` healthy AutoPET-layout phantoms, written once under out/phantoms."""

    root = out / "phantoms"
    if count == 0:
        return []
    if not root.is_dir():  # written through a staged folder: present only when complete
        say(f"writing {count} healthy PET/CT phantoms (AutoPET layout, 64^3) -> {root}")
        write_phantom_dataset(layout="autopet", out=root, cases=0, healthy=count, size=64, seed=seed)
    scans = []
    for pet in sorted(root.rglob("SUV.nii.gz")):
        study = pet.parent
        scans.append((study.parent.name, pet, study / "CTres.nii.gz"))  # PETCT_<id>: one study a phantom
    if len(scans) != count:
        raise TumorGenError(f"{root}: holds {len(scans)} phantoms, not {count}; delete it and run the demo again")
    return scans


def _synthesize_example(tg, case, out: Path, result: BundledDemoResult, num: int, seed: int, on_samples) -> list[dict]:

    scan = load_volume(case.image)
    mask = load_volume(case.mask, kind="mask").array > 0
    box = tumor_box(mask)
    sample_seed = derived_seed(seed, case.name)
    made = tg.synthesize(scan, box=box, num=num, seed=sample_seed, on_samples=on_samples)
    _record(result, made, "example", case.name, case.image, out, sample_seed, f"--box {' '.join(map(str, box))}",
            real=tumor_summary(scan.array, mask, scan.spacing))
    rows = [{"label": f"real {case.name}", "case": case.name, "image": scan.array, "mask": mask,
             "affine": scan.affine, "box": box}]
    rows += [{"label": f"synthetic {case.name} #{k}", "case": case.name, "image": r.image, "mask": r.mask,
              "affine": r.affine, "box": r.box} for k, r in enumerate(made)]
    write_outputs(made, scan_path=case.image, out_dir=out / "synthetic", case_name=case.name, overwrite=True,
                  manifest_extra={"model": result.model, "steps": tg.sample_steps})
    return rows


def _synthesize_phantom(tg, name: str, pet: Path, ct: Path, out: Path, result: BundledDemoResult, num: int,
                        seed: int, on_samples) -> list[dict]:

    scan = load_volume(pet)
    sample_seed = derived_seed(seed, name)
    made = tg.synthesize(scan, ct=load_volume(ct), num=num, seed=sample_seed, on_samples=on_samples)
    _record(result, made, "phantom", name, pet, out, sample_seed, f"--ct {shlex.quote(str(ct))}")
    write_outputs(made, scan_path=pet, out_dir=out / "synthetic", case_name=name, overwrite=True,
                  manifest_extra={"model": result.model, "steps": tg.sample_steps})
    return [{"label": f"synthetic {name} #{k}", "image": r.image,
             "mask": r.mask, "affine": r.affine, "box": r.box} for k, r in enumerate(made)]


def _record(result: BundledDemoResult, made, source: str, case: str, scan_path: Path, out: Path, seed: int,
            where: str, real: dict | None = None) -> None:
    for k, r in enumerate(made):
        spacing = voxel_spacing(r.affine)
        result.samples.append(DemoSample(source=source, case=case, k=k, box=tuple(int(v) for v in r.box), seed=r.seed,
                                         seconds=r.seconds, stats=tumor_summary(r.image, r.mask, spacing),
                                         check=tumor_check(r.image, r.mask, r.box), real=real))
    result.commands.append(f"tumorgen synthesize --input {shlex.quote(str(scan_path))} {where} --num {len(made)} "
                           f"--seed {seed} --out {shlex.quote(str(out / 'synthetic'))} --name {case} --overwrite")


def closing_words(result: BundledDemoResult) -> str:
    out = result.out
    return "\n".join([
        f"demo finished in {result.seconds['total']:.0f} s: {result.passed} of {len(result.samples)} synthetic "
        "tumors pass the four checks (report.md).",
        "Look at:",
        f"  {out / 'montage_examples.png'}   real sarcomas (real rows) and the tumors grown in their boxes",
        f"  {out / 'montage_phantoms.png'}   tumors grown in the lungs of healthy phantoms",
        f"  {out / 'report.md'}              every sample, its checks, and the command that makes it",
        f"  {out / 'synthetic'}/             NIfTI PET (SUV) + masks on each input's grid, PNGs, manifest.json",
        "Next, your own scan (PET in SUV, NIfTI):",
        "  tumorgen synthesize --input scan_suv.nii.gz --center-mm X Y Z --size-mm 30 30 30 --out synth",
        "Train on your own data: README, 'Train your own model'; or `tumorgen demo --train` (phantoms, ~11 min).",
    ])

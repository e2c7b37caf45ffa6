"""The paper's experiments as a plan of jobs: what `benchmarks/paper_tables.py` runs, and prints with --dry-run.

From one PREP cache every model is trained into WORK/runs/<name>, bounded by steps: the VAE (`vae_steps`),
then TumorGen, its four ablations (`--set ablate=...`, on the same VAE), DiffTumor, BLD, MedFusion (its own
VAE with `vae_steps`, then its denoiser) and HA-GAN, each `steps` updates, so every variant gets the
same number; the alignment segmenter (`train-seg`) gets `seg_steps`. A run given with `reuse` is read,
never trained or resumed. Then the evaluations, all on the PREP test split:

- Table 1 (and Table 3's FIDs): one paired protocol run (`tumorgen evaluate-paired`) with the six methods
  and SynTumor, TumorGen at 2, 4, 10 and 50 Euler steps when Table 3 is asked, the diffusion baselines
  DDIM-50; one more with DiffTumor DDPM-50;
- Table 2: one paired run per variant (the full model and the four ablations) at the first protocol
  seed, with the volumes saved for the segmenter's DSC/NSD (`evaluation.alignment`); the further seeds
  for the full model and the rows within the floor's noise are decided after the first
  (`evaluation.paper_rows.needs_repeat`);
- Table 3: the speed harness (`evaluation.speed`) on the recipe's networks in this process;
- Fig. 4: tumors placed in tumor-free tissue of the test scans (`evaluation.healthy`).

Training and paired jobs are `tumorgen` commands (`argv`); the others run through the package API. This
module only plans: it imports no torch, and reads nothing but the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from tumorgen.config import ABLATIONS, load_config
from tumorgen.errors import TumorGenError, fail_on

PARTS = ("table1", "table2", "table3", "fig4")
TABLE1_METHODS = ("hagan", "medfusion", "bld", "syntumor", "difftumor", "tumorgen")  # the paper's row order
TABLE3_STEPS = (2, 4, 10, 50)  # RFM-N rows of Table 3
VARIANTS = ("full", *ABLATIONS)  # Table 2's rows: the full model is trained as `tumorgen`
NEEDS = {  # the trained runs each part reads
    "table1": ("vae", "tumorgen", "difftumor", "bld", "medfusion", "hagan"),
    "table2": ("vae", "tumorgen", *ABLATIONS, "seg"),
    "table3": ("vae", "tumorgen", "difftumor"),
    "fig4": ("vae", "tumorgen"),
}
TRAINED = ("vae", "tumorgen", *ABLATIONS, "difftumor", "bld", "medfusion", "hagan", "seg")  # training order
ON_THE_VAE = ("tumorgen", *ABLATIONS, "difftumor", "bld")  # built on the shared VAE


@dataclass(frozen=True)
class PaperOptions:
    """What to regenerate and how.

    Args:
        data: the PREP cache (the IBSI recipe's `prep/ibsi`).
        out: where the tables, figures and README go (e.g. benchmarks/results/paper).
        work: runs, protocol folders and logs (never committed); None: OUT/work, which .gitignore ignores.
        config: the preset or config file every model trains with (the recipe's: ibsi).
        steps: updates of TumorGen, each ablation and each baseline; None: the config's `train.steps`.
        vae_steps: updates of the VAE and of MedFusion's own VAE; None: the config's `vae_train.steps`.
        seg_steps, seg_batch: the alignment segmenter's updates and batch.
        seeds: protocol seeds; the first for every evaluation, the rest for Table 2's repeats.
        parts: which of PARTS to make.
        features: FID features: "inception" (the tables) or "pixels" (smoke tests).
        inception: a local TorchScript FID Inception file.
        device: "auto", "cpu" or "cuda", for every job.
        reuse: {run name: an existing run folder} read instead of trained (e.g. {"vae": runs/ibsi/vae}).
        sample_steps: TumorGen's Euler steps in Tables 1 and 2 and Fig. 4.
        baseline_steps: DDIM/DDPM steps of DiffTumor, BLD and MedFusion.
        speed_batch, speed_repeats: Table 3's batch (beside batch 1) and timed repeats (median).
        healthy_per_case, clearance_mm: Fig. 4's tumors per test scan and their distance from the real tumor.
        radiomics: also the IBSI radiomic panel of every method's tumors in Table 1's run (needs
            `tumorgen[radiomics]`): how each method's tumors look up close, beside the real ones.
    """

    data: Path
    out: Path
    work: Path | None = None
    config: str = "ibsi"
    steps: int | None = None
    vae_steps: int | None = None
    seg_steps: int = 2000
    seg_batch: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    parts: tuple[str, ...] = PARTS
    features: str = "inception"
    inception: str | None = None
    device: str = "auto"
    reuse: dict = field(default_factory=dict)
    sample_steps: int = 10
    baseline_steps: int = 50
    speed_batch: int = 8
    speed_repeats: int = 3
    healthy_per_case: int = 2
    clearance_mm: float = 20.0
    radiomics: bool = False

    @property
    def work_dir(self) -> Path:
        return Path(self.work) if self.work is not None else Path(self.out) / "work"


@dataclass(frozen=True)
class Job:
    """One step of the plan.

    Args:
        name: unique, e.g. "train tumorgen", "paired main", "alignment full-seed0".
        kind: "train", "paired", "alignment", "speed" or "healthy".
        out: the run folder, protocol folder or result file it writes.
        argv: the `tumorgen` command (train and paired jobs; "--resume" is added when resuming).
        steps: train jobs: the step its last checkpoint must reach.
        needs: the run names it reads.
        reused: a run given by the user: read, never trained.
        detail: a word on what it is, for the dry run.
    """

    name: str
    kind: str
    out: Path
    argv: tuple[str, ...] = ()
    steps: int | None = None
    needs: tuple[str, ...] = ()
    reused: bool = False
    detail: str = ""


def check_options(options: PaperOptions) -> PaperOptions:
    """Refuse what cannot run, in one sentence; fill in the config's step budgets."""
    data = Path(options.data)
    if not (data / "dataset.json").is_file():
        raise fail_on(data, "is not a PREP cache (no dataset.json); run `tumorgen prepare` first")
    unknown = [p for p in options.parts if p not in PARTS]
    if unknown or not options.parts:
        raise TumorGenError(f"--parts takes some of {', '.join(PARTS)}, got {','.join(options.parts) or 'none'}")
    if not options.seeds or len(set(options.seeds)) != len(options.seeds):
        raise TumorGenError(f"--seeds must be distinct integers, got {','.join(map(str, options.seeds)) or 'none'}")
    if options.radiomics:
        from tumorgen.evaluation.radiomics import mirp_available

        if "table1" not in options.parts:
            raise TumorGenError("--radiomics adds a panel to Table 1's run: keep table1 in --parts")
        if not mirp_available():  # refused now, not after hours of training
            raise TumorGenError("--radiomics needs MIRP: pip install 'tumorgen[radiomics]'")
    counts = {"--steps": options.steps, "--vae-steps": options.vae_steps, "--seg-steps": options.seg_steps,
              "--seg-batch": options.seg_batch, "--sample-steps": options.sample_steps,
              "--baseline-steps": options.baseline_steps, "--speed-batch": options.speed_batch,
              "--speed-repeats": options.speed_repeats, "--healthy-per-case": options.healthy_per_case}
    for name, value in counts.items():
        if value is not None and value < 1:
            raise TumorGenError(f"{name} must be a positive integer, got {value}")
    if options.features not in ("inception", "pixels"):
        raise TumorGenError(f"--features must be inception or pixels, got {options.features!r}")
    for name, run in options.reuse.items():
        if name not in TRAINED:
            raise TumorGenError(f"--reuse: {name!r} is not a run of the plan; choose from {', '.join(TRAINED)}")
        if not (Path(run) / "checkpoints" / "last.pt").is_file():
            raise fail_on(run, f"is not a finished run (no checkpoints/last.pt) to reuse as {name}")
    cfg = load_config(options.config)
    return replace(options, steps=options.steps or cfg.train.steps, vae_steps=options.vae_steps or cfg.vae_train.steps)


def run_dir(options: PaperOptions, name: str) -> Path:
    """Where the run `name` is: the reused folder, or WORK/runs/<name>."""
    return Path(options.reuse.get(name) or options.work_dir / "runs" / name)


def variant_run(variant: str) -> str:
    """The run behind a Table 2 row: the full model is `tumorgen`."""
    return "tumorgen" if variant == "full" else variant


def trainings(options: PaperOptions) -> list[Job]:
    """The training jobs the chosen parts need, in training order (the VAE first)."""
    needed = {name for part in options.parts for name in NEEDS[part]}
    common = ("--data", str(options.data), "--config", options.config, "--device", options.device, "--no-progress")
    vae = str(run_dir(options, "vae"))
    steps = ("--steps", str(options.steps))
    commands = {
        "vae": (("train-vae", *common, "--steps", str(options.vae_steps)), options.vae_steps, "the shared VAE"),
        "tumorgen": (("train", *common, "--vae", vae, *steps), options.steps, "TumorGen (the full model)"),
        **{a: (("train", *common, "--vae", vae, *steps, "--set", f"ablate={a}"), options.steps, f"ablation {a}")
           for a in ABLATIONS},
        "difftumor": (("train-baseline", "--method", "difftumor", *common, "--vae", vae, *steps), options.steps,
                      "DiffTumor on the shared VAE"),
        "bld": (("train-baseline", "--method", "bld", *common, "--vae", vae, *steps), options.steps,
                "BLD on the shared VAE"),
        "medfusion": (("train-baseline", "--method", "medfusion", *common, *steps, "--set",
                       f"vae_train.steps={options.vae_steps}"), options.steps,
                      f"MedFusion: its own VAE ({options.vae_steps} steps), then its denoiser"),
        "hagan": (("train-baseline", "--method", "hagan", *common, *steps), options.steps, "HA-GAN"),
        "seg": (("train-seg", *common, "--steps", str(options.seg_steps), "--set",
                 f"train.batch_size={options.seg_batch}"), options.seg_steps,
                f"the alignment segmenter (batch {options.seg_batch})"),
    }
    jobs = []
    for name in TRAINED:
        if name not in needed:
            continue
        argv, budget, detail = commands[name]
        out = run_dir(options, name)
        jobs.append(Job(name=f"train {name}", kind="train", out=out, argv=(*argv, "--out", str(out)), steps=budget,
                        needs=("vae",) if name in ON_THE_VAE else (), reused=name in options.reuse, detail=detail))
    return jobs


def paired_argv(options: PaperOptions, out: Path, methods: Sequence[tuple[str, str | None]], *, steps: Sequence[int],
                seed: int, sampler: str = "ddim", save_volumes: bool = False,
                radiomics: bool = False) -> tuple[str, ...]:
    """`tumorgen evaluate-paired` with the plan's protocol settings."""
    listed = ",".join(kind if run is None else f"{kind}={run}" for kind, run in methods)
    argv = ["evaluate-paired", "--data", str(options.data), "--out", str(out), "--methods", listed,
            "--steps", ",".join(map(str, steps)), "--told-steps", "", "--baseline-sampler", sampler,
            "--baseline-steps", str(options.baseline_steps), "--seed", str(seed), "--features", options.features,
            "--feature-cache", str(options.work_dir / "features"), "--device", options.device, "--overwrite"]
    if options.inception:
        argv += ["--inception", str(options.inception)]
    if save_volumes:
        argv.append("--save-volumes")
    if radiomics:
        argv.append("--radiomics")
    return tuple(argv)


def main_paired_steps(options: PaperOptions) -> list[int]:
    """TumorGen's step counts in the main paired run: Table 3's with it, else the sampling steps alone."""
    return sorted({options.sample_steps, *TABLE3_STEPS}) if "table3" in options.parts else [options.sample_steps]


def table2_jobs(options: PaperOptions, variants: Sequence[str], seed: int) -> list[Job]:
    """A paired run (volumes saved) and its segmenter scores per Table 2 variant, at one protocol seed."""
    jobs = []
    for variant in variants:
        run = variant_run(variant)
        out = options.work_dir / "paired" / "table2" / f"{variant}-seed{seed}"
        argv = paired_argv(options, out, [("tumorgen", str(run_dir(options, run)))], steps=[options.sample_steps],
                           seed=seed, save_volumes=True)
        jobs.append(Job(name=f"paired {variant} seed {seed}", kind="paired", out=out, argv=argv, needs=(run,),
                        detail=f"Table 2: {variant}, RFM-{options.sample_steps}, protocol seed {seed}"))
        jobs.append(Job(name=f"alignment {variant} seed {seed}", kind="alignment",
                        out=options.work_dir / "alignment" / f"{variant}-seed{seed}.json", needs=(run, "seg"),
                        detail=f"Table 2: the segmenter's DSC/NSD on {variant}'s outputs, seed {seed}"))
    return jobs


def evaluations(options: PaperOptions) -> list[Job]:
    """The evaluation jobs at the first protocol seed (Table 2's repeats come later)."""
    work, seed, parts = options.work_dir, options.seeds[0], options.parts
    jobs = []
    if "table1" in parts or "table3" in parts:
        kinds = TABLE1_METHODS if "table1" in parts else ("difftumor", "tumorgen")
        methods = [(k, None if k == "syntumor" else str(run_dir(options, k))) for k in kinds]
        out = work / "paired" / "main"
        jobs.append(Job(name="paired main", kind="paired", out=out, needs=tuple(k for k in kinds if k != "syntumor"),
                        argv=paired_argv(options, out, methods, steps=main_paired_steps(options), seed=seed,
                                         radiomics=options.radiomics),
                        detail=f"Table 1 (and Table 3's FIDs): {', '.join(kinds)}; TumorGen RFM-"
                               f"{','.join(map(str, main_paired_steps(options)))}, "
                               f"baselines DDIM-{options.baseline_steps}"))
    if "table3" in parts:
        out = work / "paired" / "difftumor-ddpm"
        jobs.append(Job(name="paired difftumor ddpm", kind="paired", out=out, needs=("difftumor",),
                        argv=paired_argv(options, out, [("difftumor", str(run_dir(options, "difftumor")))],
                                         steps=[options.sample_steps], seed=seed, sampler="ddpm"),
                        detail=f"Table 3: DiffTumor DDPM-{options.baseline_steps}"))
        jobs.append(Job(name="speed", kind="speed", out=work / "speed.json",
                        detail=f"Table 3: DDPM-50, DDIM-50, RFM-50/10/4/2 at batch 1 and {options.speed_batch}, "
                               f"{options.speed_repeats} repeats, untrained {options.config} networks"))
    if "table2" in parts:
        jobs += table2_jobs(options, VARIANTS, seed)
    if "fig4" in parts:
        jobs.append(Job(name="healthy", kind="healthy", out=work / "healthy", needs=("tumorgen",),
                        detail=f"Fig. 4: {options.healthy_per_case} TumorGen RFM-{options.sample_steps} tumors per "
                               f"test scan, >= {options.clearance_mm:g} mm from the real tumor, seed {seed}"))
    return jobs


def describe(options: PaperOptions, jobs: Sequence[Job], states: dict[str, str]) -> list[str]:
    """The dry run's lines: the budgets, then each job with its state and command."""
    lines = [f"plan: {', '.join(options.parts)} from {options.data} (config {options.config}); runs in "
             f"{options.work_dir}; tables in {options.out}",
             f"steps: VAE {options.vae_steps}; TumorGen, each ablation and each baseline {options.steps}; "
             f"MedFusion's VAE {options.vae_steps}; segmenter {options.seg_steps}",
             f"protocol seeds: {options.seeds[0]} for every evaluation"
             + (f"; {', '.join(map(str, options.seeds[1:]))} for Table 2's full model and the rows within the "
                "floor's noise (decided after the first seed)" if "table2" in options.parts and len(options.seeds) > 1
                else "")]
    for job in jobs:
        lines.append(f"[{states.get(job.name, 'to run')}] {job.name}: {job.detail}")
        if job.argv and not job.reused:
            lines.append("    tumorgen " + " ".join(a if a and " " not in a else repr(a) for a in job.argv))
    return lines

"""Run the paper's experiments (`evaluation.paper_plan`) one job at a time, resumably, and write the tables.

Why one job at a time, each a `tumorgen` command in its own process: on a 2-core machine two jobs only
slow each other down, and a process per job frees its memory and leaves a log per job (WORK/logs/). A
job is skipped when its output is there and current, so an interrupted run is continued by running the
same command again:
- a training is done when its last checkpoint reached its step budget; otherwise it is resumed
  (`--resume`) from that checkpoint, or started again when it was killed before its first one;
- an evaluation is done when its output is complete and its stamp (`<out>.job.json`: its command and
  the step of every run it read) matches; a retrained model makes it run again.
Wall seconds per job are added up over calls in WORK/ledger.json. The alignment DSC/NSD, the speed
harness and the healthy-subject placements run through the package API in this process.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from tumorgen.config import load_config
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation import paper_plan as plan
from tumorgen.evaluation.alignment import segmenter_agreement
from tumorgen.evaluation.healthy import run_healthy
from tumorgen.evaluation.paper_report import write_outputs
from tumorgen.evaluation.paper_rows import method_row_name, needs_repeat, protocol_row
from tumorgen.evaluation.speed import worker as speed_worker
from tumorgen.generators import build_generator
from tumorgen.io.atomic import write_json
from tumorgen.io.files import sha256_file
from tumorgen.synthesis.generate import resolve_inference_device
from tumorgen.synthesis.region_decode import DEFAULT_MARGIN
from tumorgen.training.checkpoint import load_checkpoint

Runner = Callable[[Sequence[str], Path], int]  # (tumorgen arguments, log file) -> exit status
SPEED_METHODS = ("ddpm-50", "ddim-50", "rfm-50", "rfm-10", "rfm-4", "rfm-2")  # Table 3's rows


def subprocess_runner(argv: Sequence[str], log: Path) -> int:
    """`python -m tumorgen ARGV` in a fresh process, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ tumorgen {' '.join(argv)}\n")
        fh.flush()
        return subprocess.run([sys.executable, "-m", "tumorgen", *argv], stdout=fh, stderr=subprocess.STDOUT).returncode


def checkpoint_step(run: Path) -> int | None:
    """The step of a run's last checkpoint (MedFusion: its denoiser's), None before the first."""
    last = Path(run) / "checkpoints" / "last.pt"
    return int(load_checkpoint(last)["step"]) if last.is_file() else None


class PaperRun:
    """One call of the plan: the options, the runner, the ledger and what was measured."""

    def __init__(self, options: plan.PaperOptions, *, runner: Runner, say: Callable[[str], None]):
        self.options, self.runner, self.say = options, runner, say
        self.work = options.work_dir
        self.ledger_path = self.work / "ledger.json"
        self.ledger = json.loads(self.ledger_path.read_text()) if self.ledger_path.is_file() else {}
        self._steps: dict[str, int | None] = {}

    # -- bookkeeping --------------------------------------------------------------------------

    def step_of(self, name: str) -> int | None:
        if name not in self._steps:
            self._steps[name] = checkpoint_step(plan.run_dir(self.options, name))
        return self._steps[name]

    def _record(self, job: plan.Job, seconds: float, **extra) -> None:
        entry = self.ledger.get(job.name, {})
        self.ledger[job.name] = {**entry, **extra, "seconds": entry.get("seconds", 0.0) + seconds,
                                 "argv": list(job.argv), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(self.ledger_path, self.ledger)

    def _cli(self, job: plan.Job, argv: Sequence[str]) -> None:
        log = self.work / "logs" / (job.name.replace(" ", "_") + ".log")
        code = self.runner(list(argv), log)
        if code != 0:
            raise TumorGenError(f"{job.name} failed (tumorgen {argv[0]} exited {code}); its log is {log}")

    # -- training -----------------------------------------------------------------------------

    def train_state(self, job: plan.Job) -> str:
        name = job.name.split(" ", 1)[1]
        step = self.step_of(name)
        if job.reused:
            return f"reused, step {step}"
        if step is None:
            started = name == "medfusion" and (job.out / "config.json").exists()
            return "resume (its VAE phase)" if started else "new"
        return "done" if step == job.steps else f"resume from step {step}"

    def train(self, job: plan.Job) -> None:
        name = job.name.split(" ", 1)[1]
        step = self.step_of(name)
        if job.reused:
            self._check_reused(job, name, step)
            return
        if step is not None and step > job.steps:
            raise fail_on(job.out, f"was trained {step} steps, more than the budget of {job.steps}; choose another "
                                   "--work or the budget it was trained with")
        if step == job.steps:
            self.say(f"[done] {job.name} (step {step})")
            return
        resume = step is not None or (name == "medfusion" and (job.out / "config.json").is_file())
        if not resume and job.out.exists() and any(job.out.iterdir()):
            if (job.out / "config.json").is_file() and not any(job.out.glob("checkpoints/*.pt")):
                shutil.rmtree(job.out)  # killed before its first checkpoint: nothing to continue
            else:
                raise fail_on(job.out, "holds files that are not a run of this plan; move them or choose another "
                                       "--work")
        self.say(f"[{'resume' if resume else 'train'}] {job.name} to step {job.steps}"
                 + (f" from {step}" if step else ""))
        started = time.perf_counter()
        self._cli(job, [*job.argv, "--resume"] if resume else job.argv)
        self._steps.pop(name, None)
        reached = self.step_of(name)
        self._record(job, time.perf_counter() - started, steps=reached)
        if reached != job.steps:
            raise fail_on(job.out, f"stopped at step {reached} of {job.steps}; run the command again to continue")

    def _check_reused(self, job: plan.Job, name: str, step: int | None) -> None:
        if name != "vae" and step != job.steps:
            raise fail_on(job.out, f"was trained {step} steps; --reuse {name} needs the plan's budget of {job.steps}")
        if name in plan.ON_THE_VAE:
            vae = plan.run_dir(self.options, "vae") / "checkpoints" / "last.pt"
            if sha256_file(job.out / "vae.pt") != sha256_file(vae):
                raise fail_on(job.out, f"was not built on the plan's VAE ({vae}); reuse it with its own VAE")
        self.say(f"[reused] {job.name}: {job.out} (step {step})")

    # -- evaluations --------------------------------------------------------------------------

    def _stamp(self, job: plan.Job) -> dict:
        return {"argv": list(job.argv), "detail": job.detail, "inputs": {n: self.step_of(n) for n in job.needs}}

    def _stamp_path(self, job: plan.Job) -> Path:
        return job.out.with_name(job.out.name + ".job.json")

    def eval_done(self, job: plan.Job) -> bool:
        complete = (job.out / "metrics.json").is_file() if job.kind in ("paired", "healthy") else job.out.is_file()
        stamp = self._stamp_path(job)
        current = json.loads(json.dumps(self._stamp(job)))  # as it reads back (tuples as lists)
        return complete and stamp.is_file() and json.loads(stamp.read_text()) == current

    def evaluate(self, job: plan.Job) -> None:
        if self.eval_done(job):
            self.say(f"[done] {job.name}")
            return
        self.say(f"[run] {job.name}: {job.detail}")
        started = time.perf_counter()
        job.out.parent.mkdir(parents=True, exist_ok=True)
        if job.kind == "paired":
            self._cli(job, job.argv)
        elif job.kind == "alignment":
            variant, seed = job.name.split()[1], job.name.split()[-1]
            paired = self.work / "paired" / "table2" / f"{variant}-seed{seed}"
            scores = segmenter_agreement(paired, plan.run_dir(self.options, "seg"),
                                         rows=[f"tumorgen-{self.options.sample_steps}"], device=self.options.device)
            write_json(job.out, scores)
        elif job.kind == "speed":
            write_json(job.out, self.measure_speed())
        elif job.kind == "healthy":
            generator = build_generator("tumorgen", plan.run_dir(self.options, "tumorgen"),
                                        steps=self.options.sample_steps, device=self.options.device)
            run_healthy(data=self.options.data, out=job.out, generator=generator,
                        per_case=self.options.healthy_per_case, clearance_mm=self.options.clearance_mm,
                        seed=self.options.seeds[0], overwrite=True, log=self.say)
        write_json(self._stamp_path(job), self._stamp(job))
        self._record(job, time.perf_counter() - started)

    def measure_speed(self) -> dict:
        """Table 3's timings: the speed harness at batch 1 and at `speed_batch`, in this process."""
        cfg = load_config(self.options.config)
        size = cfg.data.window_size if cfg.data.window == "box" else max(load_prepared(self.options.data).size)
        device = resolve_inference_device(self.options.device).type
        base = dict(preset=self.options.config, size=int(size), device=device, threads=torch.get_num_threads(),
                    repeats=self.options.speed_repeats, margin=DEFAULT_MARGIN, kind="method")
        result = {"meta": {**{k: v for k, v in base.items() if k != "kind"},
                           "weights": "untrained (seeded): timing does not depend on weight values"}}
        for method in SPEED_METHODS:
            one = speed_worker({**base, "method": method, "batch": 1})
            many = speed_worker({**base, "method": method, "batch": self.options.speed_batch})
            result[method] = {"batch1_s": one["per_sample_s"], "batch": self.options.speed_batch,
                              "batch_s": many["batch_s"], "batch_per_sample_s": many["per_sample_s"]}
            self.say(f"  speed {method}: {one['per_sample_s']:.3f} s/sample at batch 1, {many['batch_s']:.3f} s "
                     f"per batch of {self.options.speed_batch}")
        return result

    def table2_repeats(self) -> list[plan.Job]:
        """The further protocol seeds for the full model and each row within the floor's noise at the first."""
        first = self.options.seeds[0]
        name = method_row_name("tumorgen", sample_steps=self.options.sample_steps, baseline_steps=0)
        metrics = {v: _read(self.work / "paired" / "table2" / f"{v}-seed{first}" / "metrics.json")
                   for v in plan.VARIANTS}
        full = protocol_row(metrics["full"], name)
        floor = metrics["full"]["floor"]
        close = [v for v in plan.ABLATIONS if needs_repeat(protocol_row(metrics[v], name), full, floor)]
        if not close:
            self.say("Table 2: every ablation is beyond the floor's noise at the first seed; no repeats")
            return []
        self.say(f"Table 2: within the floor's noise at seed {first}: {', '.join(close)}; repeated with the full "
                 f"model at seeds {', '.join(map(str, self.options.seeds[1:]))}")
        return [job for seed in self.options.seeds[1:]
                for job in plan.table2_jobs(self.options, ["full", *close], seed)]


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def machine() -> dict:
    """What the tables were measured on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cores_usable": usable, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def dry_run(options: plan.PaperOptions) -> list[str]:
    """The plan's lines with each job's state, running nothing."""
    options = plan.check_options(options)
    run = PaperRun(options, runner=subprocess_runner, say=lambda _: None)
    jobs = plan.trainings(options) + plan.evaluations(options)
    states = {j.name: run.train_state(j) if j.kind == "train" else ("done" if run.eval_done(j) else "to run")
              for j in jobs}
    return plan.describe(options, jobs, states)


def run_paper(options: plan.PaperOptions, *, command: str = "", runner: Runner = subprocess_runner,
              say: Callable[[str], None] = print) -> dict:
    """Train what is missing, evaluate what is stale, and write OUT (tables, figures, README, summary.json).

    Args:
        options: the plan's options (`paper_plan.PaperOptions`).
        command: the command line that asked for it, for the README.
        runner: how a `tumorgen` command is run (default: a fresh process each).
        say: where progress lines go.

    Returns:
        The summary written to OUT/summary.json.
    """
    options = plan.check_options(options)
    started, at_start = time.perf_counter(), machine()
    run = PaperRun(options, runner=runner, say=say)
    trainings = plan.trainings(options)
    for job in trainings:
        run.train(job)
    jobs = plan.evaluations(options)
    for job in jobs:
        run.evaluate(job)
    if "table2" in options.parts and len(options.seeds) > 1:
        repeats = run.table2_repeats()
        for job in repeats:
            run.evaluate(job)
        jobs += repeats
    results = collect(options, jobs)
    steps = {j.name.split(" ", 1)[1]: {"steps": run.step_of(j.name.split(" ", 1)[1]), "budget": j.steps,
                                       "reused": j.reused, "run": str(j.out)} for j in trainings}
    info = {"command": command, "machine": at_start, "options": _plain(options.__dict__), "steps": steps,
            "ledger": run.ledger, "wall_minutes": (time.perf_counter() - started) / 60.0}
    return write_outputs(options, results, info)


def collect(options: plan.PaperOptions, jobs: Sequence[plan.Job]) -> dict:
    """Every evaluation's result, read back from WORK."""
    work = options.work_dir
    paired = {j.name: _read(j.out / "metrics.json") for j in jobs if j.kind == "paired"}
    table2: dict[str, dict[int, tuple]] = {}
    for job in jobs:
        if job.kind == "alignment":
            variant, seed = job.name.split()[1], int(job.name.split()[-1])
            table2.setdefault(variant, {})[seed] = (paired[f"paired {variant} seed {seed}"], _read(job.out))
    return {"main": paired.get("paired main"), "ddpm": paired.get("paired difftumor ddpm"), "table2": table2,
            "speed": _read(work / "speed.json") if "table3" in options.parts else None,
            "healthy": _read(work / "healthy" / "metrics.json") if "fig4" in options.parts else None}


def _plain(value):
    """Options as JSON: paths as text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value

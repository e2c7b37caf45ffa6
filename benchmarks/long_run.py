"""Long run: one process synthesizes many samples and its resident memory must stay flat.

A user's augmentation job calls the model thousands of times in one process; a leak of a few MB per
sample (a kept figure, a growing cache, autograd history) kills it after hours. This script loads a
debug-preset model once, synthesizes `--samples` tumors into a phantom scan one at a time, writes each
through the same writer `tumorgen synthesize` uses (NIfTI + PNG preview + manifest), reads every output
back with `load_volume`, checks its mask lies inside its box, and records VmRSS after each sample.

    python benchmarks/long_run.py                   # trains a 1-step debug run first (CPU, ~1 min)
    python benchmarks/long_run.py --model RUN --samples 200 --steps 2

It prints the RSS after sample 20 and after the last one, the slope (least squares over samples
20..N, MiB per 100 samples) and a table of RSS every 20 samples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 20  # samples after which allocator pools and lazy imports have settled


def rss_mib() -> float:
    """This process's resident set size (VmRSS) in MiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # reported in kB
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def train_debug_run(root: Path) -> Path:
    """A TumorGen run on the debug preset, one step per stage, from phantoms prepared at 16^3."""
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.data.phantom_layouts import write_phantom_dataset
    from tumorgen.data.prepare import prepare_dataset
    from tumorgen.training.tumorgen_stage import train_tumorgen
    from tumorgen.training.vae_stage import train_vae

    write_phantom_dataset(layout="nnunet", out=root / "raw", cases=4, healthy=1, size=32, seed=0)
    prepare_dataset(layout="nnunet", root=root / "raw", out=root / "prep", size=16, progress=False)
    config = apply_overrides(load_config("debug"), ["vae_train.steps=1", "train.steps=1"])
    train_vae(data=root / "prep", out=root / "vae", config=config, progress=False)
    train_tumorgen(data=root / "prep", vae_run=root / "vae", out=root / "run", config=config, progress=False)
    return root / "run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a TumorGen run folder (default: train a debug run first)")
    parser.add_argument("--samples", type=int, default=200, help="samples to synthesize (default 200)")
    parser.add_argument("--steps", type=int, default=2, help="Euler steps per sample (default 2)")
    parser.add_argument("--work", default=None, help="folder for the run and outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.samples <= WARMUP:
        parser.error(f"--samples must be more than {WARMUP}")

    from tumorgen.api import TumorGen
    from tumorgen.data.phantom import make_phantom
    from tumorgen.io.nifti import load_volume, save_volume
    from tumorgen.synthesis.pipeline import write_outputs

    work = Path(args.work or tempfile.mkdtemp(prefix="tumorgen-long-run-"))
    model_dir = Path(args.model) if args.model else train_debug_run(work / "train")
    phantom = make_phantom(region="torso", size=(40, 40, 32), with_tumor=False, rng=np.random.default_rng(4))
    scan_path = save_volume(phantom.suv, phantom.affine, work / "scan" / "patient.nii.gz")
    model = TumorGen.load(model_dir, device="cpu")
    out = work / "outputs"

    rss, invalid, start = [], [], time.perf_counter()
    for i in range(args.samples):
        (result,) = model.synthesize(scan_path, num=1, steps=args.steps, seed=i)
        manifest = write_outputs([result], scan_path=scan_path, out_dir=out, case_name=f"sample{i:03d}",
                                 overwrite=True)
        files = next(c for c in manifest["cases"] if c["case"] == f"sample{i:03d}")["samples"][0]["files"]
        pet = load_volume(out / files["pet"])
        mask = load_volume(out / files["mask"], kind="mask").array
        x0, y0, z0, x1, y1, z1 = result.box
        outside = mask.copy()
        outside[x0:x1, y0:y1, z0:z1] = 0
        if pet.array.shape != phantom.suv.shape or outside.any():
            invalid.append(i)
        rss.append(rss_mib())
    seconds = time.perf_counter() - start

    steady = np.asarray(rss[WARMUP - 1:])
    slope = np.polyfit(np.arange(WARMUP, args.samples + 1), steady, 1)[0] * 100.0  # MiB per 100 samples
    print(f"{args.samples} samples, {args.steps} Euler steps each, {seconds:.1f} s ({seconds / args.samples:.2f} s/sample)")
    print("sample  VmRSS MiB")
    for n in [1, *range(20, args.samples + 1, 20)]:
        print(f"{n:>6}  {rss[n - 1]:9.1f}")
    print(f"RSS after sample {WARMUP}: {rss[WARMUP - 1]:.1f} MiB; after sample {args.samples}: {rss[-1]:.1f} MiB; "
          f"growth {rss[-1] - rss[WARMUP - 1]:+.1f} MiB; slope {slope:+.2f} MiB per 100 samples")
    print(f"outputs valid NIfTI with mask inside box: {args.samples - len(invalid)}/{args.samples}")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())

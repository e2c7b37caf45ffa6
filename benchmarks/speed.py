"""Seconds per generated sample for TumorGen's flow sampler and the diffusion baseline (METHOD.md section 6).

The paper's Table 3 times RFM-10 / RFM-50 (TumorGen: encode, N Euler steps of the velocity U-Net,
decode, mask refiner) against DDPM-50 / DDIM-50 (DiffTumor-style inpainting on the same U-Net size
and latent size: 2c + 1 input channels, then decode). This script measures the same four (and RFM-4,
RFM-2) on this machine, at batch 1 and at the best batch, with peak memory, plus the floor (one U-Net forward and one
decode), the breakdown of a sample, and TumorGen with the region decode (`synthesis/region_decode`).

The models are built from the preset's config with untrained (seeded) weights: the time of a forward
pass does not depend on the weights' values. Every configuration runs in a fresh subprocess, so its
peak resident memory (VmHWM) is its own; timings are the median of `--repeats` after one warm-up run.

    python benchmarks/speed.py [--preset phantom] [--device auto|cpu|cuda] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tumorgen.evaluation.speed import METHODS, worker

DEFAULT_SIZES = {"debug": 32, "phantom": 32, "ibsi": 32, "autopet": 96, "hecktor": 128}  # volume or box-window sizes


def available_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_configuration(spec: dict, *, timeout: float) -> dict:
    """`worker(spec)` in a fresh Python process, so that its peak memory is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the parent: every configuration, the table, the JSON


def benchmark_device(args, device: str) -> dict:
    base = dict(preset=args.preset, size=args.size, device=device, threads=args.threads, repeats=args.repeats,
                margin=args.margin)
    results = {}

    def measure(spec: dict, *, timeout: float) -> dict:
        return worker(spec) if args.in_process else run_configuration(spec, timeout=timeout)

    for name in args.methods:
        rows = {}
        for b in args.batches:
            rows[b] = measure({**base, "kind": "method", "method": name, "batch": b}, timeout=args.timeout)
            print(f"  [{device}] {name} batch {b}: {rows[b]['per_sample_s']:.3f} s/sample, "
                  f"peak {rows[b]['peak_mem_mb']:.0f} MiB", file=sys.stderr, flush=True)
        best = min(rows, key=lambda b: rows[b]["per_sample_s"])
        results[name] = {
            "batch1_s": rows[1]["per_sample_s"] if 1 in rows else None,
            "best_batch": best,
            "best_batch_s": rows[best]["per_sample_s"],
            "peak_mem_mb": rows[1 if 1 in rows else best]["peak_mem_mb"],
            "peak_mem_mb_best_batch": rows[best]["peak_mem_mb"],
            "per_batch_s": {str(b): r["per_sample_s"] for b, r in rows.items()},
        }
    results["parts"] = measure({**base, "kind": "parts", "steps": 10}, timeout=args.timeout)
    return results


def format_table(device: str, results: dict) -> str:
    lines = [f"device {device}", f"| method | batch 1 s/sample | best batch | best s/sample | peak MiB (batch 1) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        if name == "parts":
            continue
        lines.append(f"| {name} | {r['batch1_s']:.3f} | {r['best_batch']} | {r['best_batch_s']:.3f} | "
                     f"{r['peak_mem_mb']:.0f} |")
    p = results["parts"]
    lines.append("")
    lines.append("breakdown of one batch-1 RFM-10 sample (s): " + ", ".join(
        f"{k} {p[k]:.3f}" for k in ("encode", "unet_step", "unet_10_steps", "decode", "refiner")))
    lines.append(f"floor (one U-Net forward + one decode): {p['floor']:.3f} s")
    lines.append(f"region decode (margin {p['margin']} latent voxels, {100 * p['region_fraction']:.0f}% of the "
                 f"volume): decode + refiner {p['decode'] + p['refiner']:.3f} s -> "
                 f"{p['region_decode_and_refiner']:.3f} s "
                 f"({(p['decode'] + p['refiner']) / p['region_decode_and_refiner']:.2f}x); max error inside the box: "
                 f"image {p['region_image_error_crop_stats']:.1e} of the range, mask prob "
                 f"{p['region_mask_error_crop_stats']:.1e} (crop statistics), image "
                 f"{p['region_image_error_scan_stats']:.1e}, mask {p['region_mask_error_scan_stats']:.1e} "
                 f"(scan statistics, one extra full pass of {p['reference_statistics']:.3f} s per window)")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="phantom", help="config preset (debug, phantom, hecktor, autopet)")
    parser.add_argument("--size", type=int, default=None, help="volume edge in voxels (default: the preset's)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: the CPU, and CUDA as well when present")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median)")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes to try")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to time")
    parser.add_argument("--margin", type=int, default=None,
                        help="region decode margin in latent voxels (default: region_decode.DEFAULT_MARGIN)")
    parser.add_argument("--threads", type=int, default=available_threads(), help="torch threads")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per configuration")
    parser.add_argument("--in-process", action="store_true",
                        help="run every configuration in this process (quick; peak memory is then cumulative)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        from tumorgen.synthesis.region_decode import DEFAULT_MARGIN

        args.size = args.size or DEFAULT_SIZES.get(args.preset, 64)
        args.margin = DEFAULT_MARGIN if args.margin is None else args.margin
        args.batches = [int(b) for b in args.batches.split(",")]
        args.methods = [m for m in args.methods.split(",") if m]
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown or args.repeats < 1 or min(args.batches) < 1:
            parser.error(f"methods must be among {list(METHODS)}, repeats and batches >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("speed.py: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    devices = {"cpu": ["cpu"], "cuda": ["cuda"]}.get(args.device, ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    report = {"preset": args.preset, "size": args.size, "threads": args.threads, "repeats": args.repeats,
              "weights": "untrained (seeded): timing does not depend on weight values", "devices": {}}
    for device in devices:
        report["devices"][device] = benchmark_device(args, device)
        print(format_table(device, report["devices"][device]), flush=True)
    if args.json is not None:
        from tumorgen.io.atomic import write_json

        first = report["devices"][devices[0]]  # the top level: the shape, for the first device
        write_json(args.json, {**{k: v for k, v in first.items()}, "meta": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())

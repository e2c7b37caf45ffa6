"""Seconds per generated sample for TumorGen's flow sampler and the diffusion baseline (METHOD.md section 6).

The paper's Table 3 times RFM-10 / RFM-50 (TumorGen: encode, N Euler steps of the velocity U-Net,
decode, mask refiner) against DDPM-50 / DDIM-50 (DiffTumor-style inpainting on the same U-Net size
and latent size: 2c + 1 input channels, then decode). This script measures the same four on this
machine, at batch 1 and at the best batch, with peak memory, plus the floor (one U-Net forward and one
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
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {  # name -> (sampler, steps, decode)
    "rfm-10": ("rfm", 10, "full"),
    "rfm-50": ("rfm", 50, "full"),
    "ddpm-50": ("ddpm", 50, "full"),
    "ddim-50": ("ddim", 50, "full"),
    "rfm-10-region": ("rfm", 10, "region"),
}
DEFAULT_SIZES = {"debug": 32, "phantom": 32, "ibsi": 32, "autopet": 96, "hecktor": 128}  # volume or box-window sizes


def available_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB, from /proc (Linux); NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------------------------------------
# the worker: one configuration in a fresh process


class Bench:
    """The preset's networks with seeded untrained weights, and one synthetic scan with a centered box.

    Args:
        preset: config preset name.
        size: volume edge in voxels (a multiple of the latent factor times the U-Net's downsampling).
        device: torch device.
    """

    def __init__(self, *, preset: str, size: int, device, margin: int):
        import torch

        from tumorgen.baselines.stage import build_baseline_unet, schedule_from_config
        from tumorgen.config import load_config
        from tumorgen.models.vae import build_vae
        from tumorgen.models.tumorgen import TumorGenModels
        from tumorgen.training.run_folder import build_flow_models
        from tumorgen.training.run_setup import seeded_init

        self.torch, self.device, self.cfg = torch, device, load_config(preset)
        v = self.cfg.vae
        with seeded_init(0):
            vae = build_vae(arch=v.arch, channels=v.channels, latent_channels=v.latent_channels,
                            num_res_blocks=v.num_res_blocks, norm_num_groups=v.norm_num_groups, attention=v.attention)
        flow = build_flow_models(self.cfg, vae)
        self.models = TumorGenModels(vae=vae.to(device), unet=flow["unet"].to(device).eval(),
                                     refiner=flow["refiner"].to(device).eval())
        self.denoiser = build_baseline_unet(self.cfg, "difftumor").to(device).eval()
        self.schedule = schedule_from_config(self.cfg.diffusion)
        self.size, self.scale, self.margin = size, 1.0, margin
        import numpy as np

        from tumorgen.data.phantom import make_phantom

        phantom = make_phantom(region="torso", size=(size,) * 3, with_tumor=False, rng=np.random.default_rng(0))
        suv = np.clip(phantom.suv / 10.0, 0.0, 1.0).astype(np.float32)  # model range, suv_max = 10
        self.scan = torch.from_numpy(suv)[None, None]  # (1, 1, X, Y, Z)
        lo, hi = 3 * size // 8, 5 * size // 8  # a box of a quarter of the edge, as a typical tumor box
        lo, hi = lo // 4 * 4, -(-hi // 4) * 4
        self.box = torch.tensor([[lo, lo, lo, hi, hi, hi]], dtype=torch.int64)  # (1, 6) image voxels

    def batch(self, b: int):
        return self.scan.expand(b, -1, -1, -1, -1).contiguous().to(self.device), self.box.expand(b, -1).to(self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run(self, sampler: str, steps: int, decode: str, b: int) -> None:
        """One batch of `b` samples, end to end (scan in, decoded image and mask out)."""
        torch = self.torch
        image, boxes = self.batch(b)
        gen = torch.Generator(device=self.device).manual_seed(1)
        uptake = torch.full((b,), 0.4, device=self.device) if self.models.uptake_condition else None
        if sampler == "rfm":
            from tumorgen.synthesis.generate import sample_latents, sample_tumor
            from tumorgen.synthesis.region_decode import decode_region

            if decode == "full":
                sample_tumor(self.models, image, boxes, scale_factor=self.scale, steps=steps, generator=gen,
                             uptake=uptake)
            else:
                z_hat, m_hat, lat = sample_latents(self.models, image, boxes, scale_factor=self.scale, steps=steps,
                                                   generator=gen, uptake=uptake)
                for b in range(z_hat.shape[0]):  # one sample at a time, as model_generator decodes
                    decode_region(self.models.vae, self.models.refiner, z_hat[b : b + 1] / self.scale,
                                  m_hat[b : b + 1], lat[b].tolist(), margin=self.margin)
        else:
            from tumorgen.baselines.difftumor import latent_mask, sample_difftumor
            from tumorgen.bbox import box_indicator
            from tumorgen.models.vae import decode, encode_mean

            z = encode_mean(self.models.vae, image) * self.scale  # (B, c, h, w, d)
            f = self.models.factor
            m = latent_mask(box_indicator(boxes, tuple(image.shape[2:])), f)  # (B, 1, h, w, d)
            noise = torch.randn(z.shape, generator=gen, device=self.device)
            step_noise = torch.Generator().manual_seed(2)  # latent_diffusion draws DDPM's noise on the CPU
            z0 = sample_difftumor(self.denoiser, z, m, noise, schedule=self.schedule, steps=steps, method=sampler,
                                  generator=step_noise)
            decode(self.models.vae, z0 / self.scale)
        self.sync()

    def parts(self, steps: int) -> dict:
        """Seconds of each part of one batch-1 RFM sample, and the floor (one U-Net forward + one decode)."""
        torch = self.torch
        from tumorgen.bbox import box_indicator, latent_box_from_image_box
        from tumorgen.models.vae import decode_with_features, encode_mean
        import numpy as np

        from tumorgen.synthesis.region_decode import decode_region, reference_statistics

        image, boxes = self.batch(1)
        out = {}
        z = self._timed(out, "encode", lambda: encode_mean(self.models.vae, image))
        c, f = self.models.latent_channels, self.models.factor
        lat = latent_box_from_image_box(boxes, f)
        box = box_indicator(lat, tuple(z.shape[2:]))
        x_in = torch.cat([torch.randn((1, c + 1, *z.shape[2:])).to(self.device), z, box], dim=1)  # (1, 2c+2, ...)
        t = torch.zeros(1, device=self.device)
        one = self._timed(out, "unet_step", lambda: self.models.unet(x_in, t))
        out[f"unet_{steps}_steps"] = out["unet_step"] * steps
        inside = (slice(None), slice(None), *(slice(int(lat[0, i]), int(lat[0, i + 3])) for i in range(3)))
        z_hat = z.clone()
        z_hat[inside] = z.flip(2)[inside]  # a new content in the box, of the scan's own distribution
        m_hat = torch.zeros_like(box)
        m_hat[inside] = one[:, c:][inside].sigmoid()  # (1, 1, h, w, d), a mask inside the box only
        full, feats = self._timed(out, "decode", lambda: decode_with_features(self.models.vae, z_hat))
        logits = self._timed(out, "refiner", lambda: self.models.refiner(m_hat, feats))
        region = self._timed(out, "region_decode_and_refiner", lambda: decode_region(
            self.models.vae, self.models.refiner, z_hat, m_hat, lat[0].tolist(), margin=self.margin))
        stats = self._timed(out, "reference_statistics", lambda: reference_statistics(
            self.models.vae, self.models.refiner, z, torch.zeros_like(m_hat)))
        with_stats = decode_region(self.models.vae, self.models.refiner, z_hat, m_hat, lat[0].tolist(),
                                   margin=self.margin, stats=stats)
        box_img = tuple(slice(int(lat[0, i]) * f, int(lat[0, i + 3]) * f) for i in range(3))
        value_range = float(full.max() - full.min())
        for name, (image, region_logits, slices) in (("crop_stats", region), ("scan_stats", with_stats)):
            inner = (slice(None), slice(None), *(slice(b.start - r.start, b.stop - r.start)
                                                 for b, r in zip(box_img, slices)))
            full_inner = (slice(None), slice(None), *box_img)
            out[f"region_image_error_{name}"] = float((image[inner] - full[full_inner]).abs().max()) / value_range
            out[f"region_mask_error_{name}"] = float(
                (region_logits[inner].sigmoid() - logits[full_inner].sigmoid()).abs().max())
        out["region_fraction"] = float(np.prod([s.stop - s.start for s in region[2]]) / np.prod(full.shape[2:]))
        out["margin"] = self.margin
        out["floor"] = out["unet_step"] + out["decode"]
        return out

    def _timed(self, out: dict, name: str, fn):
        result = fn()  # warm-up
        self.sync()
        started = time.perf_counter()
        result = fn()
        self.sync()
        out[name] = time.perf_counter() - started
        return result


def worker(spec: dict) -> dict:
    """Run one configuration (`spec` from the parent) and return its timings and peak memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    with torch.inference_mode():
        bench = Bench(preset=spec["preset"], size=spec["size"], device=device, margin=spec["margin"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _peak_rss_mb()
        if spec["kind"] == "parts":
            result = bench.parts(spec["steps"])
        else:
            sampler, steps, decode = METHODS[spec["method"]]
            bench.run(sampler, steps, decode, spec["batch"])  # warm-up
            times = []
            for _ in range(spec["repeats"]):
                started = time.perf_counter()
                bench.run(sampler, steps, decode, spec["batch"])
                times.append(time.perf_counter() - started)
            result = {"batch_s": statistics.median(times), "per_sample_s": statistics.median(times) / spec["batch"]}
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_mem_mb"] = _peak_rss_mb()  # the whole process: Python, torch, models and the run
        result["peak_mem_above_setup_mb"] = result["peak_mem_mb"] - rss_before
    return result


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

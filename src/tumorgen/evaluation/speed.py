"""Seconds per generated sample of TumorGen's flow sampler and the diffusion baseline, and their parts
(the paper's Table 3): the harness `benchmarks/speed.py` runs in a fresh process per configuration, and
`evaluation.paper` runs in its own process for the paper's Table 3.

The networks are built from a preset's config with untrained (seeded) weights: a forward pass takes the
same time whatever the weights' values. `worker(spec)` runs one configuration and returns its median
seconds and peak memory (VmHWM on Linux, so each configuration wants a process of its own).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tumorgen.baselines.difftumor import latent_mask, sample_difftumor
from tumorgen.baselines.stage import build_baseline_unet, schedule_from_config
from tumorgen.bbox import box_indicator, latent_box_from_image_box
from tumorgen.config import load_config
from tumorgen.data.phantom import make_phantom
from tumorgen.models.tumorgen import TumorGenModels, flow_condition
from tumorgen.models.vae import build_vae, decode_with_features, encode_mean
from tumorgen.models.vae import decode as vae_decode
from tumorgen.synthesis.generate import sample_latents, sample_tumor
from tumorgen.synthesis.region_decode import decode_region, reference_statistics
from tumorgen.training.run_folder import build_flow_models
from tumorgen.training.run_setup import seeded_init

METHODS = {  # name -> (sampler, steps, decode); RFM-4 and RFM-2: how far the flow's few steps go (Table 3)
    "rfm-10": ("rfm", 10, "full"),
    "rfm-50": ("rfm", 50, "full"),
    "rfm-4": ("rfm", 4, "full"),
    "rfm-2": ("rfm", 2, "full"),
    "ddpm-50": ("ddpm", 50, "full"),
    "ddim-50": ("ddim", 50, "full"),
    "rfm-10-region": ("rfm", 10, "region"),
}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB, from /proc (Linux); NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class SpeedBench:
    """The preset's networks with seeded untrained weights, and one synthetic scan with a centered box.

    Args:
        preset: config preset name.
        size: volume edge in voxels (a multiple of the latent factor times the U-Net's downsampling).
        device: torch device.
    """

    def __init__(self, *, preset: str, size: int, device, margin: int):
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
            z = encode_mean(self.models.vae, image) * self.scale  # (B, c, h, w, d)
            f = self.models.factor
            m = latent_mask(box_indicator(boxes, tuple(image.shape[2:])), f)  # (B, 1, h, w, d)
            noise = torch.randn(z.shape, generator=gen, device=self.device)
            step_noise = torch.Generator().manual_seed(2)  # latent_diffusion draws DDPM's noise on the CPU
            z0 = sample_difftumor(self.denoiser, z, m, noise, schedule=self.schedule, steps=steps, method=sampler,
                                  generator=step_noise)
            vae_decode(self.models.vae, z0 / self.scale)
        self.sync()

    def parts(self, steps: int) -> dict:
        """Seconds of each part of one batch-1 RFM sample, and the floor (one U-Net forward + one decode)."""
        torch = self.torch
        image, boxes = self.batch(1)
        out = {}
        z = self._timed(out, "encode", lambda: encode_mean(self.models.vae, image))
        c, f = self.models.latent_channels, self.models.factor
        lat = latent_box_from_image_box(boxes, f)
        box = box_indicator(lat, tuple(z.shape[2:]))
        uptake = torch.full((1,), 0.4, device=self.device) if self.models.uptake_condition else None
        condition = flow_condition(z * (1.0 - box), box, uptake, self.models)  # as sample_latents builds it
        x_in = torch.cat([torch.randn((1, c + 1, *z.shape[2:])).to(self.device), condition], dim=1)
        t = torch.zeros(1, device=self.device)
        one = self._timed(out, "unet_step", lambda: self.models.velocity(x_in, t, uptake))
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
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    with torch.inference_mode():
        bench = SpeedBench(preset=spec["preset"], size=spec["size"], device=device, margin=spec["margin"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = peak_rss_mb()
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
        result["peak_mem_mb"] = peak_rss_mb()  # the whole process: Python, torch, models and the run
        result["peak_mem_above_setup_mb"] = result["peak_mem_mb"] - rss_before
    return result

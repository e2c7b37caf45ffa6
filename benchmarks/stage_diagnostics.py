"""Measure each stage of a trained model on its own, on held-out box windows: which one limits?

A latent space that cannot hold a tumor cannot generate one, so each stage is judged alone:
1. VAE: encode_mean then decode on box windows around held-out tumors: SUVmean / SUVmax inside the
   tumor (real vs reconstructed), MAE and PSNR inside vs outside the tumor, in SUV.
2. Flow, one step: for t in a grid, the one-step estimate (METHOD.md eq. 1) from x_t on the true path:
   latent error inside the box and the mask channel's calibration (mean m_hat inside the true latent
   tumor vs inside the box but outside it; Dice of m_hat > 0.5).
3. Flow, sampled (N Euler steps from noise, the synthesis path): the same mask statistics.
   With `flow.erase_context` the flow is conditioned on the window with its box erased, as in training
   and synthesis.
4. Refiner alone, fed the true latents and the true latent mask: Dice of its mask against the true
   full-resolution mask (its ceiling), and fed the sampled ones.

    python benchmarks/stage_diagnostics.py --data PREP --model RUN --split test --out benchmarks/results/NAME

Prints one table and writes `stages.json` and `stages.md` to --out. Works for box-window runs
(`data.window = "box"`), the windows are cut exactly as in training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from tumorgen.bbox import box_indicator, downsample_mask
from tumorgen.data.box_windows import box_window_spec, random_windows
from tumorgen.data.erase import erase_box
from tumorgen.data.intensity import model_to_suv, tumor_uptake
from tumorgen.data.prepared import load_prepared
from tumorgen.evaluation.segmentation_metrics import dice as segmentation_dice
from tumorgen.flow import interpolate, joint_target, one_step_estimate, split_joint
from tumorgen.models.tumorgen import flow_condition
from tumorgen.models.vae import decode_with_features, encode_mean
from tumorgen.synthesis.generate import sample_latents
from tumorgen.training.run_folder import load_run


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two probability maps thresholded at 0.5 (`evaluation.segmentation_metrics.dice`)."""
    return segmentation_dice(a > 0.5, b > 0.5)


def psnr(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    mse = float(np.mean((x - y) ** 2))
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="a tumorgen train run folder (box windows)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--windows", type=int, default=4, help="box windows per case")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    run = load_run(args.model)
    cfg, models, scale = run.config, run.models, run.scale_factor
    if cfg.data.window != "box":
        print("this diagnostic needs a box-window run (data.window = box)", file=sys.stderr)
        return 2
    dataset = load_prepared(args.data)
    cases = [c for c in dataset.split(args.split) if not c.healthy]
    loaded = [c.load() for c in cases]
    spec = box_window_spec(cfg, dataset.suv_max)
    images, masks, boxes = random_windows([im * dataset.suv_max for im, _, _ in loaded], [m for _, m, _ in loaded],
                                          [a for _, _, a in loaded], spec, np.random.default_rng(args.seed),
                                          args.windows * len(loaded), flips=False)
    f, c, s = models.factor, models.latent_channels, cfg.flow.s
    kind, suv_max = spec.intensity, dataset.suv_max
    rows = {"vae": [], "refiner_true": [], "sampled": []}
    one_step = {t: [] for t in (0.1, 0.3, 0.5, 0.7, 0.9)}
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for i in range(len(images)):
            x = torch.from_numpy(images[i : i + 1])  # (1, 1, S, S, S)
            M = masks[i, 0]
            z = encode_mean(models.vae, x) * scale
            recon, feats = decode_with_features(models.vae, z / scale)
            real_suv = model_to_suv(images[i, 0], suv_max=suv_max, kind=kind)
            rec_suv = model_to_suv(recon[0, 0].numpy(), suv_max=suv_max, kind=kind)
            t_in, t_out = M > 0, M == 0
            rows["vae"].append({
                "suv_mean_real": float(real_suv[t_in].mean()), "suv_mean_rec": float(rec_suv[t_in].mean()),
                "suv_max_real": float(real_suv[t_in].max()), "suv_max_rec": float(rec_suv[t_in].max()),
                "mae_in": float(np.abs(real_suv - rec_suv)[t_in].mean()),
                "mae_out": float(np.abs(real_suv - rec_suv)[t_out].mean()),
                "psnr_in": psnr(real_suv[t_in], rec_suv[t_in], float(real_suv[t_in].max())),
                "psnr_out": psnr(real_suv[t_out], rec_suv[t_out], float(real_suv[t_in].max())),
            })
            m = downsample_mask(torch.from_numpy(masks[i : i + 1]), f)  # (1, 1, h, w, d)
            latent_box = torch.from_numpy(boxes[i : i + 1]) // f
            box = box_indicator(latent_box, tuple(z.shape[2:]))
            if models.refiner is not None:
                prob = torch.sigmoid(models.refiner(m, feats))[0, 0].numpy()
                rows["refiner_true"].append({"dice": dice(prob, M)})
            context = z  # what the flow is conditioned on: the window, or with its box erased (as trained)
            if cfg.flow.erase_context:
                erased = erase_box(images[i, 0], boxes[i], rng=np.random.default_rng([args.seed, i]))
                context = encode_mean(models.vae, torch.from_numpy(erased)[None, None].float()) * scale
            y = joint_target(box * z + (1 - box) * context, m, s=s)
            # an uptake-conditioned model is told this tumor's own mean SUV (the diagnostic asks what
            # the flow makes given it; the paired protocol draws uptakes as synthesis does)
            uptake = (torch.from_numpy(tumor_uptake(images[i : i + 1], masks[i : i + 1], suv_max=suv_max, kind=kind))
                      if models.uptake_condition else None)
            cond = flow_condition(context * (1 - box), box, uptake, models)
            inside_tumor = (m > 0.5) & (box > 0)
            around = (m <= 0.5) & (box > 0)
            for t in one_step:
                eps = torch.randn(y.shape, generator=gen)
                tt = torch.full((1,), t)
                x_t = interpolate(eps, y, tt)
                y_hat = one_step_estimate(x_t, models.unet(torch.cat([x_t, cond], 1), tt), tt)
                z_hat, m_hat = split_joint(y_hat, latent_channels=c, s=s)
                one_step[t].append({
                    "latent_mse_box": float(((z_hat - z) ** 2 * box).sum() / (box.sum() * c)),
                    "m_hat_tumor": float(m_hat[inside_tumor].mean()) if inside_tumor.any() else None,
                    "m_hat_around": float(m_hat[around].mean()) if around.any() else None,
                    "dice_latent": dice(m_hat[0, 0].numpy(), (m[0, 0] > 0.5).float().numpy()),
                })
            noise = torch.randn((1, c + 1, *z.shape[2:]), generator=gen)
            z_s, m_s, _ = sample_latents(models, x, torch.from_numpy(boxes[i : i + 1]), scale_factor=scale,
                                         steps=args.steps, noise=noise, latents=context / scale, s=s,
                                         uptake=uptake)
            sample = {"m_hat_box_mean": float(m_s[box > 0].mean()),
                      "latent_tumor_fraction_true": float(m[box > 0].mean()),
                      "m_hat_above_half_share": float((m_s[box > 0] > 0.5).float().mean())}
            if models.refiner is not None:
                _, feats_s = decode_with_features(models.vae, z_s / scale)
                prob_s = torch.sigmoid(models.refiner(m_s, feats_s))[0, 0].numpy()
                sample["mask_volume_ratio"] = float((prob_s > 0.5).sum() / max(M.sum(), 1))
                image_s = decode_with_features(models.vae, z_s / scale)[0][0, 0].numpy()
                gen_suv = model_to_suv(image_s, suv_max=suv_max, kind=kind)
                if (prob_s > 0.5).any():
                    sample["suv_mean_ratio"] = float(gen_suv[prob_s > 0.5].mean() / real_suv[t_in].mean())
            rows["sampled"].append(sample)

    def mean(items, key):
        vals = [r[key] for r in items if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    summary = {
        "vae": {k: mean(rows["vae"], k) for k in rows["vae"][0]},
        "one_step": {str(t): {k: mean(v, k) for k in v[0]} for t, v in one_step.items()},
        "refiner_on_true_latents_dice": mean(rows["refiner_true"], "dice") if rows["refiner_true"] else None,
        "sampled": {k: mean(rows["sampled"], k) for k in rows["sampled"][0]},
        "windows": len(images), "cases": [c.name for c in cases], "model": str(args.model), "step": run.step,
        "split": args.split, "steps": args.steps,
    }
    v = summary["vae"]
    lines = [f"# Stage diagnostics: {args.model} (step {run.step}), {len(images)} box windows of {len(cases)} "
             f"{args.split} cases", "",
             "| stage | measure | value |", "|---|---|---|",
             f"| VAE | tumor SUVmean real / reconstructed | {v['suv_mean_real']:.2f} / {v['suv_mean_rec']:.2f} |",
             f"| VAE | tumor SUVmax real / reconstructed | {v['suv_max_real']:.2f} / {v['suv_max_rec']:.2f} |",
             f"| VAE | MAE (SUV) inside / outside tumor | {v['mae_in']:.3f} / {v['mae_out']:.3f} |",
             f"| VAE | PSNR (dB, peak = tumor SUVmax) inside / outside | {v['psnr_in']:.1f} / {v['psnr_out']:.1f} |"]
    for t, o in summary["one_step"].items():
        lines.append(f"| flow one-step, t={t} | latent MSE in box; m_hat in tumor / around; Dice | "
                     f"{o['latent_mse_box']:.3f}; {o['m_hat_tumor']:.2f} / {o['m_hat_around']:.2f}; {o['dice_latent']:.2f} |")
    sm = summary["sampled"]
    lines.append(f"| flow sampled ({args.steps} steps) | m_hat mean in box (true tumor share); share > 0.5 | "
                 f"{sm['m_hat_box_mean']:.2f} ({sm['latent_tumor_fraction_true']:.2f}); {sm['m_hat_above_half_share']:.2f} |")
    if summary["refiner_on_true_latents_dice"] is not None:
        lines.append(f"| refiner on true latents | Dice vs true mask | {summary['refiner_on_true_latents_dice']:.2f} |")
        lines.append(f"| refiner on sampled latents | mask volume / real | {sm.get('mask_volume_ratio', float('nan')):.2f} |")
        lines.append(f"| decoded sample in its mask | mean SUV / real (uptake condition: "
                     f"{'the real tumor' if models.uptake_condition else 'none'}) | "
                     f"{sm.get('suv_mean_ratio') or float('nan'):.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    (out / "stages.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate tumors into a PREP split with one method, for evaluation (`tumorgen generate-set`).

A fair comparison gives every method the same scans and the same boxes. Here the box depends only on
the PREP case and the seed, never on the method: for a case with a tumor it is the BA-PMG box of its
real tumor (tight box on the latent grid, each face grown by U(0, alpha L), docs/METHOD.md section 1);
for a healthy case it is one of the training tumors' box sizes centred on a random body voxel. Boxes
lie on the latent grid (multiples of the VAE's factor f, read from the model's data.json; SynTumor,
which has no VAE, is told the f of the models it is compared with), as the generators require.

The PREP grid is the model window (both are `size` voxels at the cached spacing), so nothing is
resampled: the case's volume goes to `generate` as is, and the generated box is pasted back with
`synthesis.blend.blend_into_scan` (feathered seam, noise matching), exactly as `synthesize` does.
SynTumor needs no model: its uptake statistics come from the PREP training tumors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.config import FlowConfig
from tumorgen.data.box_geometry import box_slices
from tumorgen.data.prepared import PreparedDataset, load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.generated_set import save_sample, write_index
from tumorgen.generators import build_generator
from tumorgen.io.atomic import staged_dir
from tumorgen.synthesis.pipeline import sample_seeds

METHODS = ("tumorgen", "difftumor", "bld", "medfusion", "hagan", "syntumor")
FEATHER = 3  # seam width in voxels, the same as `tumorgen synthesize`'s default


def tumor_box(mask: np.ndarray, *, alpha: float, seed: int, factor: int) -> tuple[int, ...]:
    """The BA-PMG box of a real tumor, on the image grid: latent tight box grown by random margins.

    Args:
        mask: (X, Y, Z) binary tumor mask, not empty, sides divisible by `factor`.
        alpha: the expansion factor.
        seed: seeds the six margins.
        factor: the latent downsampling factor.
    """
    import torch

    from tumorgen.bbox import downsample_mask, expand_box, scale_box, tight_box

    m = downsample_mask(torch.from_numpy(np.asarray(mask, np.float32))[None, None], factor)  # (1, 1, h, w, d)
    grown = expand_box(tight_box(m), shape=tuple(m.shape[2:]), alpha=alpha,
                       generator=torch.Generator().manual_seed(int(seed)))
    return tuple(int(v) for v in scale_box(grown, factor)[0].tolist())


def training_box_sizes(dataset: PreparedDataset, *, factor: int) -> np.ndarray:
    """(N, 3) image-voxel sizes of the training tumors' tight latent boxes (for healthy cases)."""
    sizes = []
    for case in dataset.tumor_cases("train"):
        _, mask, _ = case.load()
        box = tumor_box(mask, alpha=0.0, seed=0, factor=factor)
        sizes.append([b - a for a, b in zip(box[:3], box[3:])])
    if not sizes:
        raise fail_on(dataset.root / "dataset.json", "has no training tumors to take box sizes from")
    return np.asarray(sizes, dtype=np.int64)


def healthy_box(image: np.ndarray, *, sizes: np.ndarray, seed: int, factor: int) -> tuple[int, ...]:
    """A box of a training tumor's size around a random body voxel, snapped to the latent grid.

    Args:
        image: (X, Y, Z) the case's volume (any positive intensity scale).
        sizes: (N, 3) training box sizes in voxels.
        seed: seeds the size and centre draws.
        factor: the latent downsampling factor.
    """
    from tumorgen.synthesis.boxes import body_mask

    rng = np.random.default_rng(int(seed))
    shape = np.asarray(image.shape)
    body = body_mask(np.asarray(image), threshold=0.1 * float(np.percentile(image, 99)))
    centers = np.flatnonzero(body)
    center = np.array(np.unravel_index(centers[rng.integers(centers.size)], image.shape))
    size = np.minimum(sizes[rng.integers(len(sizes))], shape // factor * factor)
    start = np.clip((center - size // 2) // factor * factor, 0, shape - size)
    return tuple(int(v) for v in (*start, *(start + size)))


def _generate_with_model(generate: Callable, image: np.ndarray, box, seed: int, suv_max: float):
    """Run `generate` on the whole PREP volume (it is the window), then blend the box into the scan."""
    import torch

    from tumorgen.synthesis.blend import blend_into_scan

    window = torch.from_numpy(image[None, None].astype(np.float32))  # (1, 1, X, Y, Z)
    with torch.no_grad():
        image_hat, mask_prob = generate(window, torch.tensor([box], dtype=torch.int64), [seed])
    inside = box_slices(box)
    generated = image_hat[0, 0].float().cpu().numpy()[inside] * suv_max  # SUV inside the box
    prob = mask_prob[0, 0].float().cpu().numpy()[inside]
    suv, mask = blend_into_scan(image * suv_max, generated, prob, box, feather=FEATHER, match_noise=True,
                                rng=np.random.default_rng([seed, 1]))
    return suv / suv_max, mask


def _latent_factor(generator, given: int | None) -> int:
    """The factor boxes are snapped to: the model's; without a model (syntumor), the one given."""
    own = None if generator.info is None else generator.info.latent_factor
    if own is not None and given is not None and given != own:
        raise TumorGenError(f"--latent-factor {given} disagrees with the model's latent factor {own}; leave it out")
    factor = own if own is not None else given
    if factor is None:
        raise TumorGenError(f"--latent-factor is needed for {generator.kind}: the VAE factor of the models its set "
                            "is compared with (latent_factor in their data.json), so that it gets their boxes")
    if factor < 1:
        raise TumorGenError(f"--latent-factor must be >= 1, got {factor}")
    return int(factor)


def generate_set(*, method: str, data: str | Path, out: str | Path, model: str | Path | None = None,
                 split: str = "test", per_case: int = 1, steps: int | None = None, sampler: str | None = None,
                 seed: int = 0, device: str = "auto", latent_factor: int | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Generate `per_case` tumors into every case of a PREP split and write the generated set.

    Args:
        method: one of METHODS.
        data: the PREP folder (`tumorgen prepare`).
        out: the generated set's folder (built in a staging folder, moved into place at the end).
        model: the method's run folder (not for syntumor).
        split: "test" (the evaluation split) or "train".
        per_case: samples per case.
        steps: sampling steps; None: the run's config (`flow.sample_steps`, `diffusion.sample_steps`).
        sampler: "euler" (tumorgen), "ddpm" or "ddim" (baselines; default ddim).
        seed: the run's seed; boxes and samples derive from it, the same for every method.
        device: "auto", "cpu" or "cuda".
        latent_factor: the VAE factor f boxes are snapped to: a model's own (given, it must agree);
            syntumor needs it, the f of the models its set is compared with, so it gets their boxes.
        overwrite: replace an existing `out`.
        progress: show a progress bar.

    Returns:
        The generated.json index.
    """
    from tqdm import tqdm

    if method not in METHODS:
        raise TumorGenError(f"--method {method} is not one of {', '.join(METHODS)}")
    if per_case < 1:
        raise TumorGenError(f"--per-case must be >= 1, got {per_case}")
    dataset = load_prepared(data)
    cases = dataset.split(split)
    if not cases:
        raise fail_on(dataset.root / "dataset.json", f"has no cases in the {split!r} split")
    suv_max = dataset.suv_max
    if method == "syntumor":
        loaded = [c.load() for c in dataset.tumor_cases("train")]
        if not loaded:
            raise fail_on(dataset.root / "dataset.json", "has no training tumors to fit SynTumor's uptake to")
        generator = build_generator("syntumor", reference=([im * suv_max for im, _, _ in loaded],
                                                           [m for _, m, _ in loaded]), seed=seed)
    else:
        if model is None and method != "tumorgen":
            raise TumorGenError(f"--model is required for --method {method}: the run folder it was trained into")
        generator = build_generator(method, model, steps=steps, sampler=sampler, device=device, grid=dataset.size)
    factor = _latent_factor(generator, latent_factor)
    if any(s % factor for s in dataset.size):
        raise fail_on(dataset.root / "dataset.json",
                      f"grid {dataset.size} is not divisible by the latent factor {factor}")

    alpha = FlowConfig().alpha
    sizes = training_box_sizes(dataset, factor=factor)
    jobs = [(case, k) for case in cases for k in range(per_case)]
    seeds = sample_seeds(seed, len(jobs))
    samples = []
    with staged_dir(out, overwrite=overwrite) as stage:
        bar = tqdm(jobs, desc=f"generate-set {method}", unit="sample", file=sys.stderr, disable=not progress)
        for (case, k), sample_seed in zip(bar, seeds):
            image, real_mask, affine = case.load()
            box_seed = int(np.random.SeedSequence([sample_seed, 2]).generate_state(1)[0])
            box = (tumor_box(real_mask, alpha=alpha, seed=box_seed, factor=factor) if real_mask.any()
                   else healthy_box(image, sizes=sizes, seed=box_seed, factor=factor))
            started = time.perf_counter()
            if generator.window is not None and generator.info.window != "box":
                new_image, mask = _generate_with_model(generator.window, image, box, sample_seed, suv_max)
            else:  # the public synthesis path on the PREP case as the scan, as `tumorgen synthesize` runs it
                suv, mask = generator(image * suv_max, affine, box, sample_seed)
                new_image = suv / suv_max
            seconds = time.perf_counter() - started
            image_name, mask_name = save_sample(stage, case=case.name, k=k, image=new_image, mask=mask, affine=affine)
            samples.append({"case": case.name, "k": k, "image": image_name, "mask": mask_name, "box": list(box),
                            "seed": sample_seed, "seconds": round(seconds, 4),
                            "real_tumor": bool(real_mask.any())})
        bar.close()
        write_index(stage, method=method, samples=samples, data=Path(data).resolve(), split=split,
                    sampler=generator.sampler, steps=generator.steps, model=generator.record,
                    extra={"seed": seed, "alpha": alpha, "feather": FEATHER, "latent_factor": factor})
    from tumorgen.evaluation.generated_set import load_generated_set

    return load_generated_set(out).info

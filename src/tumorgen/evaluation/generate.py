"""Generate tumors into a PREP split with one method, for evaluation (`tumorgen generate-set`).

A fair comparison gives every method the same scans and the same boxes. Here the box depends only on
the PREP case and the seed, never on the method: for a case with a tumor it is the BA-PMG box of its
real tumor (tight box on the latent grid, each face grown by U(0, alpha L), docs/METHOD.md section 1);
for a healthy case it is one of the training tumors' box sizes centred on a random body voxel. Boxes
lie on the latent grid (multiples of the VAE factor 4), as the generators require.

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
from tumorgen.data.prepared import PreparedDataset, load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.generated_set import save_sample, write_index
from tumorgen.io.atomic import staged_dir
from tumorgen.synthesis.pipeline import sample_seeds

METHODS = ("tumorgen", "difftumor", "bld", "syntumor")
LATENT_FACTOR = 4  # the VAE's downsampling factor f (docs/METHOD.md): boxes must be whole latent voxels
FEATHER = 3  # seam width in voxels, the same as `tumorgen synthesize`'s default


def tumor_box(mask: np.ndarray, *, alpha: float, seed: int, factor: int = LATENT_FACTOR) -> tuple[int, ...]:
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


def training_box_sizes(dataset: PreparedDataset, *, factor: int = LATENT_FACTOR) -> np.ndarray:
    """(N, 3) image-voxel sizes of the training tumors' tight latent boxes (for healthy cases)."""
    sizes = []
    for case in dataset.tumor_cases("train"):
        _, mask, _ = case.load()
        box = tumor_box(mask, alpha=0.0, seed=0, factor=factor)
        sizes.append([b - a for a, b in zip(box[:3], box[3:])])
    if not sizes:
        raise fail_on(dataset.root / "dataset.json", "has no training tumors to take box sizes from")
    return np.asarray(sizes, dtype=np.int64)


def healthy_box(image: np.ndarray, *, sizes: np.ndarray, seed: int, factor: int = LATENT_FACTOR) -> tuple[int, ...]:
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


def model_generator_for(method: str, model: str | Path | None, *, steps: int | None, sampler: str, device: str,
                        size: tuple[int, int, int]) -> tuple[Callable, dict]:
    """Load a method's model as the pipeline's `generate` callable; returns (generate, model record).

    Args:
        method: "tumorgen", "difftumor" or "bld".
        model: the run folder.
        steps, sampler: sampling steps and sampler ("euler" for TumorGen; "ddpm"/"ddim" for baselines);
            steps None: the run's own (`flow.sample_steps` / `diffusion.sample_steps`), as `generate.steps`.
        device: "auto", "cpu" or "cuda".
        size: the PREP grid, which must be the model's window.
    """
    import json

    from tumorgen import __version__
    from tumorgen.io.files import sha256_file
    from tumorgen.synthesis.generate import model_generator, resolve_inference_device

    if model is None and method != "tumorgen":
        raise TumorGenError(f"--model is required for --method {method}: the run folder it was trained into")
    if method == "tumorgen":  # None, a bundled name, an exported model or a run folder
        from tumorgen.training.model_bundle import MODEL_FILE, is_model_folder, resolve_model

        run_dir = resolve_model(model)
        data_json = run_dir / MODEL_FILE if is_model_folder(run_dir) else run_dir / "data.json"
    else:
        run_dir = Path(model)
        data_json = run_dir / "data.json"
    if not data_json.is_file():
        raise fail_on(run_dir, "is not a training run folder (it has no data.json)")
    try:
        data_info = json.loads(data_json.read_text())
        data_info = data_info["data"] if data_json.name == "model.json" else data_info
        window = tuple(int(s) for s in data_info["size"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise fail_on(data_json, f"has no readable grid size ({err})") from None
    box_windows = data_info.get("window") == "box"  # any PREP grid: the window is cut around each box
    if not box_windows and window != tuple(size):
        raise fail_on(data_json, f"describes a {window} model window but the PREP grid is {tuple(size)}; "
                                 "generate into the PREP the model was trained on")
    torch_device = resolve_inference_device(device)
    if method == "tumorgen":
        if sampler != "euler":
            raise TumorGenError(f"--sampler {sampler} does not apply to tumorgen, which samples with euler")
        from tumorgen.api import TumorGen

        run = TumorGen.load(run_dir, device=str(torch_device)).run
        generate, version = model_generator(run, steps=steps, device=torch_device), run.version
    else:
        if sampler not in ("ddpm", "ddim"):
            raise TumorGenError(f"--sampler {sampler} does not apply to {method}; use ddpm or ddim")
        from tumorgen.baselines.generators import load_baseline_generator

        generate = load_baseline_generator(run_dir, method=sampler, steps=steps, device=torch_device)
        if generate.baseline.kind != method:
            raise fail_on(run_dir, f"holds a {generate.baseline.kind} model, not {method}")
        version = __version__
    weights = run_dir / "flow.safetensors" if method == "tumorgen" and is_model_folder(run_dir) else (
        run_dir / "checkpoints" / "last.pt")
    record = {"run": str(run_dir), "version": version, "sha256": sha256_file(weights)}
    if box_windows:
        record["model_info"] = data_info
    return generate, record


def _generate_in_box_window(generate: Callable, model_info: dict, image: np.ndarray, affine: np.ndarray, box,
                            seed: int, suv_max: float):
    """A box-window model: the public synthesis path on the PREP case as the scan (window cut around
    the box, the model's intensity scale, paste-back), exactly as `tumorgen synthesize` runs it."""
    from tumorgen.io.nifti import Volume
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    scan = Volume(array=(image * suv_max).astype(np.float32), affine=affine, path=Path("<PREP case>"))
    result = synthesize_into_scan(scan=scan, boxes=[tuple(int(v) for v in box)], generate=generate,
                                  model_info=model_info, seed=seed, feather=FEATHER, match_noise=True)[0]
    return result.image / suv_max, result.mask


def _generate_with_model(generate: Callable, image: np.ndarray, box, seed: int, suv_max: float):
    """Run `generate` on the whole PREP volume (it is the window), then blend the box into the scan."""
    import torch

    from tumorgen.synthesis.blend import blend_into_scan

    window = torch.from_numpy(image[None, None].astype(np.float32))  # (1, 1, X, Y, Z)
    with torch.no_grad():
        image_hat, mask_prob = generate(window, torch.tensor([box], dtype=torch.int64), [seed])
    inside = tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))
    generated = image_hat[0, 0].float().cpu().numpy()[inside] * suv_max  # SUV inside the box
    prob = mask_prob[0, 0].float().cpu().numpy()[inside]
    suv, mask = blend_into_scan(image * suv_max, generated, prob, box, feather=FEATHER, match_noise=True,
                                rng=np.random.default_rng([seed, 1]))
    return suv / suv_max, mask


def generate_set(*, method: str, data: str | Path, out: str | Path, model: str | Path | None = None,
                 split: str = "test", per_case: int = 1, steps: int | None = None, sampler: str | None = None,
                 seed: int = 0, device: str = "auto", overwrite: bool = False, progress: bool = True) -> dict:
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
    if any(s % LATENT_FACTOR for s in dataset.size):
        raise fail_on(dataset.root / "dataset.json", f"grid {dataset.size} is not divisible by {LATENT_FACTOR}")
    suv_max = dataset.suv_max
    if method == "syntumor":
        from tumorgen.baselines.syntumor import SuvStats, SynTumor

        loaded = [c.load() for c in dataset.tumor_cases("train")]
        if not loaded:
            raise fail_on(dataset.root / "dataset.json", "has no training tumors to fit SynTumor's uptake to")
        stats = SuvStats.from_tumors([im * suv_max for im, _, _ in loaded], [m for _, m, _ in loaded])
        syntumor, record, sampler, steps = SynTumor(suv_stats=stats, seed=seed), {}, None, None
    else:
        sampler = sampler or ("euler" if method == "tumorgen" else "ddim")
        generate, record = model_generator_for(method, model, steps=steps, sampler=sampler, device=device,
                                               size=dataset.size)
        steps = int(generate.steps)

    alpha = FlowConfig().alpha
    sizes = training_box_sizes(dataset)
    jobs = [(case, k) for case in cases for k in range(per_case)]
    seeds = sample_seeds(seed, len(jobs))
    samples = []
    with staged_dir(out, overwrite=overwrite) as stage:
        bar = tqdm(jobs, desc=f"generate-set {method}", unit="sample", file=sys.stderr, disable=not progress)
        for (case, k), sample_seed in zip(bar, seeds):
            image, real_mask, affine = case.load()
            box_seed = int(np.random.SeedSequence([sample_seed, 2]).generate_state(1)[0])
            box = (tumor_box(real_mask, alpha=alpha, seed=box_seed) if real_mask.any()
                   else healthy_box(image, sizes=sizes, seed=box_seed))
            started = time.perf_counter()
            if method == "syntumor":
                suv, mask = syntumor.generate(image * suv_max, box=box, rng=np.random.default_rng(sample_seed))
                new_image = suv / suv_max
            else:
                if "model_info" in record:
                    new_image, mask = _generate_in_box_window(generate, record["model_info"], image, affine, box,
                                                              sample_seed, suv_max)
                else:
                    new_image, mask = _generate_with_model(generate, image, box, sample_seed, suv_max)
            seconds = time.perf_counter() - started
            image_name, mask_name = save_sample(stage, case=case.name, k=k, image=new_image, mask=mask, affine=affine)
            samples.append({"case": case.name, "k": k, "image": image_name, "mask": mask_name, "box": list(box),
                            "seed": sample_seed, "seconds": round(seconds, 4),
                            "real_tumor": bool(real_mask.any())})
        bar.close()
        record = {k: v for k, v in record.items() if k != "model_info"}
        write_index(stage, method=method, samples=samples, data=Path(data).resolve(), split=split, sampler=sampler,
                    steps=steps, model=record, extra={"seed": seed, "alpha": alpha, "feather": FEATHER})
    from tumorgen.evaluation.generated_set import load_generated_set

    return load_generated_set(out).info

"""The Python API: load a trained run once, then synthesize tumors into any number of scans.

    from tumorgen import TumorGen
    model = TumorGen.load()                  # the bundled model; or a name, or a run folder
    results = model.synthesize("patient/SUV.nii.gz", box=(40, 52, 30, 56, 68, 46), num=2, seed=7)
    results[0].image, results[0].mask        # SUV and binary mask on the input scan's grid

The CLI commands `synthesize` and `augment` are thin layers over this class, so the API has the same
power: a NIfTI path or a numpy array with its affine, a given, per-sample or sampled box (in an organ
mask, in the lungs of a CT, or in the body), several samples per call, seeded and reproducible.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import Volume, check_same_grid, load_volume
from tumorgen.synthesis import uptake_match
from tumorgen.synthesis.pipeline import ModelInfo, SynthesisResult, synthesize_into_scan



def as_volume(image, *, affine=None, kind: str = "image", like: Volume | None = None, what: str = "scan") -> Volume:
    """A path, a `Volume` or an (X, Y, Z) array (+ affine) as a `Volume`.

    Args:
        image: the input.
        affine: (4, 4) voxel-to-world map for an array; for an array without one, `like`'s affine.
        kind: "image" or "mask" (for files: a mask must be binary).
        like: the scan a mask or CT belongs to (supplies the affine of a bare array).
        what: how an error names the input.
    """
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, Path)):
        return load_volume(image, kind=kind)
    array = np.asarray(image)
    if array.ndim != 3:
        raise TumorGenError(f"the {what} array must be 3D (X, Y, Z), got shape {array.shape}")
    if affine is None and like is not None:
        affine = like.affine
    if affine is None:
        raise TumorGenError(f"a {what} given as an array needs its affine (voxel-to-world, 4x4)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise TumorGenError(f"the {what}'s affine must be a finite, invertible 4x4 matrix")
    if kind == "mask":
        array = (array > 0).astype(np.uint8)
    else:
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise TumorGenError(f"the {what} array contains NaN or infinite values")
    return Volume(array=array, affine=affine, path=Path(f"<{what} array>"))


def peek_model_info(source: str | Path | None = None) -> ModelInfo | None:
    """The model's grid without loading any weights (None when unreadable).

    `source` is what `TumorGen.load` takes (None, a bundled name, a run or exported model folder).
    Lets the CLI refuse a box the model cannot hold before the (slower) model load; `TumorGen.load`
    reports a folder that is not a model.
    """
    import json

    from tumorgen.training.model_bundle import MODEL_FILE, is_model_folder, resolve_model

    try:
        folder = resolve_model(source)
        if is_model_folder(folder):
            return ModelInfo.from_dict(json.loads((folder / MODEL_FILE).read_text())["data"])
        return ModelInfo.from_dict(json.loads((folder / "data.json").read_text()))
    except (TumorGenError, OSError, ValueError, KeyError, TypeError):
        return None


class TumorGen:
    """A trained TumorGen model, ready to synthesize.

    Args:
        run: a `training.run_folder.LoadedRun`.
        device: where its models live.
    """

    def __init__(self, *, run, device):
        self.run = run
        self.device = device
        self.info = ModelInfo.from_dict(run.data_info)
        self._checkpoint_sha256: str | None = None

    @classmethod
    def load(cls, source: str | Path | None = None, *, device: str = "auto", use_ema: bool = True,
             lite: bool = True) -> "TumorGen":
        """Load a model: the bundled one by default, a bundled one by name, or a folder.

        Args:
            source: None (the default bundled model, `ibsi-fdg`), a bundled model's name (see
                `tumorgen models`), an exported model folder (`tumorgen export-model`), or a
                `tumorgen train` run folder.
            device: "auto" (CUDA when available), "cpu" or "cuda".
            use_ema: use the EMA weights (recommended) rather than the raw ones (run folders only:
                exported models hold the EMA weights alone).
            lite: build the networks as torch-only twins of MONAI's (the same weights and outputs,
                without paying for MONAI's import); False builds MONAI's own classes.
        """
        from tumorgen.synthesis.generate import resolve_inference_device
        from tumorgen.training.model_bundle import is_model_folder, load_model_folder, resolve_model
        from tumorgen.training.run_folder import load_run

        target = resolve_inference_device(device)
        folder = resolve_model(source)
        if is_model_folder(folder):
            return cls(run=load_model_folder(folder, device=target, lite=lite), device=target)
        return cls(run=load_run(folder, device=target, use_ema=use_ema, lite=lite), device=target)

    @property
    def version(self) -> str:
        """The TumorGen version that wrote the checkpoint."""
        return self.run.version

    @property
    def run_dir(self) -> Path:
        return Path(self.run.run_dir)

    @property
    def sample_steps(self) -> int:
        """Euler steps used when none are given: the run's `flow.sample_steps`."""
        return int(self.run.config.flow.sample_steps)

    def model_record(self) -> dict:
        """What a manifest records about the model: folder, version, step, weights SHA-256."""
        if self._checkpoint_sha256 is None:
            from tumorgen.io.files import sha256_file
            from tumorgen.training.model_bundle import is_model_folder

            weights = (self.run_dir / "flow.safetensors" if is_model_folder(self.run_dir)
                       else self.run_dir / "checkpoints" / "last.pt")
            self._checkpoint_sha256 = sha256_file(weights)
        return {"run": str(self.run_dir), "version": self.version, "step": self.run.step,
                "checkpoint_sha256": self._checkpoint_sha256}

    def synthesize(
        self,
        image,
        *,
        affine=None,
        box: Sequence[int] | None = None,
        boxes: Sequence[Sequence[int]] | None = None,
        num: int = 1,
        steps: int | None = None,
        seed: int = 0,
        batch: int = 1,
        organ_mask=None,
        ct=None,
        feather: int = 3,
        match_noise: bool = True,
        suv_mean: float | None = None,
        guidance: float | None = None,
        match_uptake: bool = True,
        on_samples: Callable[[int], None] | None = None,
    ) -> list[SynthesisResult]:
        """Generate `num` tumors into a scan; each result is on the scan's own grid.

        Args:
            image: the PET in SUV: a NIfTI path, a `Volume`, or an (X, Y, Z) array with `affine`.
            affine: the array's voxel-to-world map (ignored for paths).
            box: one half-open box `(x0, y0, z0, x1, y1, z1)` in scan voxels for every sample.
            boxes: one box per sample (or one for all); exclusive with `box`.
            num: number of samples.
            steps: Euler steps of the flow sampler; None: the run's `flow.sample_steps` (`sample_steps`).
            seed: sample k is drawn from `pipeline.sample_seeds(seed, num)[k]`: same seed, same samples.
            batch: samples per model call (results do not depend on it).
            organ_mask: where sampled boxes go (path, `Volume` or array on the scan's grid).
            ct: a CT in HU on the scan's grid, whose lungs sampled boxes go into (path, `Volume`, array).
            feather: seam width in voxels, inside the box.
            match_noise: give the generated region the scan's noise grain.
            suv_mean: how hot the tumors are (mean SUV inside the mask), for a model trained with
                `flow.uptake_condition`; default: each sample takes one training tumor's.
            guidance: classifier-free guidance toward `suv_mean` (> 1 follows it more closely), for a
                model trained with `flow.uptake_dropout`; None: the model's own `flow.guidance`. A drawn
                uptake (no `suv_mean`) always samples at 1.
            match_uptake: with `suv_mean`, scale each tumor so that its mean SUV inside its mask is
                exactly `suv_mean` (`synthesis.uptake_match`; the network alone follows it roughly);
                False: the network's own uptake.
            on_samples: called with the number of samples just finished (for progress bars).
        """
        from tumorgen.synthesis.generate import model_generator

        if box is not None and boxes is not None:
            raise TumorGenError("give either one box (box=) or one box per sample (boxes=), not both")
        scan = as_volume(image, affine=affine, what="scan")
        mask_volume = ct_volume = None
        if organ_mask is not None:
            mask_volume = as_volume(organ_mask, kind="mask", like=scan, what="organ mask")
            check_same_grid(scan, mask_volume)
        if ct is not None:
            ct_volume = as_volume(ct, like=scan, what="CT")
            check_same_grid(scan, ct_volume)
        chosen = [tuple(box)] if box is not None else ([tuple(b) for b in boxes] if boxes else None)
        generate = model_generator(self.run, steps=self.sample_steps if steps is None else steps, device=self.device,
                                   suv_mean=suv_mean, guidance=guidance)
        if on_samples is not None:
            inner = generate

            def generate(window_image, boxes_in_window, seeds):
                out = inner(window_image, boxes_in_window, seeds)
                on_samples(len(seeds))
                return out

        results = synthesize_into_scan(scan=scan, boxes=chosen, generate=generate, model_info=self.info, num=num,
                                       seed=seed, batch=batch, organ_mask=mask_volume, ct=ct_volume, feather=feather,
                                       match_noise=match_noise)
        if suv_mean is None or not match_uptake:
            return results
        return [replace(r, image=uptake_match.match_uptake(r.image, r.mask, r.box, suv_mean)) for r in results]

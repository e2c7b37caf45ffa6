"""One interface for every tumor generator: TumorGen, the diffusion and rule-based baselines, the anchors.

A `TumorGenerator` puts one tumor into one box of a scan,

    generator(suv, affine, box, seed, suv_mean=None) -> (suv_out, mask)

SUV in and out on the scan's own grid, `box` half-open scan voxels, `seed` the only randomness, and
`suv_mean` the mean SUV asked of an uptake-conditioned model (ignored by the others). It is a typed
record, not a closure with attributes: what a table or a manifest needs to say about a generator (its
kind, sample steps, sampler, whether it takes an uptake, where it was loaded from) is in its fields.
`build_generator` is the one factory that makes one, for every kind in `KINDS`:

- `tumorgen`: `api.TumorGen.load(source)` (None: the bundled model; a bundled name; an exported model
  folder; a `tumorgen train` run folder), then `TumorGen.synthesize` (window cut around the box,
  paste-back with a feathered seam and the scan's noise), as `tumorgen synthesize` runs it;
- `difftumor`, `bld`, `medfusion`, `hagan`: a `tumorgen train-baseline` run through the same synthesis
  pipeline (the diffusion ones with a sampler and steps; HA-GAN in one pass);
- `syntumor`: the rule-based baseline, its uptake fitted to reference tumors;
- `blob`, `empty`: the anchors of `baselines.anchors`, the blob as hot as the reference tumors' median;
- `vae-roundtrip`: no generator but a yardstick: the box of a scan through a TumorGen model's VAE and
  back (`synthesis.generate.roundtrip_generator`), the same window and seam; given the real scan, it
  shows what the latent space can hold of the real tumor. Its mask is empty (the tumor is the scan's).

What a generator returns outside its box (SynTumor's blurred rim, for instance) is the caller's to keep
or drop: the paired protocol and `augmentation.rand_tumor.insert_tumor` keep the scan there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tumorgen import __version__
from tumorgen.baselines.anchors import blob_tumor, empty_tumor
from tumorgen.baselines.syntumor import SuvStats, SynTumor
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import sha256_file

KINDS = ("tumorgen", "difftumor", "bld", "medfusion", "hagan", "syntumor", "blob", "empty", "vae-roundtrip")
BASELINE_KINDS = ("difftumor", "bld", "medfusion", "hagan")  # a `tumorgen train-baseline` run folder
DIFFUSION_KINDS = ("difftumor", "bld", "medfusion")  # sampled with DDIM-N or DDPM-N
MODEL_KINDS = ("tumorgen", *BASELINE_KINDS, "vae-roundtrip")  # loaded from a model or run folder
# Given the real scan, not an erased one: its output keeps the real tumor (and its mask), seen through a model
REAL_INPUT_KINDS = ("vae-roundtrip",)
REFERENCE_KINDS = ("syntumor", "blob")  # fitted to reference tumors (SUV volumes and their masks)
BASELINE_SAMPLERS = ("ddim", "ddpm")

Make = Callable[[np.ndarray, np.ndarray, tuple, int, "float | None"], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TumorGenerator:
    """A tumor generator and what is known about it.

    Args:
        name: how tables and manifests name it (e.g. "tumorgen-10", "difftumor-ddim-50", "hagan").
        kind: one of `KINDS`.
        make: `(suv, affine, box, seed, suv_mean) -> (suv_out, mask)`; call the record instead.
        steps: sampling steps (model kinds), else None.
        sampler: "euler" (tumorgen), "ddim" or "ddpm" (difftumor, bld, medfusion), else None.
        uptake_conditioned: takes `suv_mean` (a TumorGen trained with `flow.uptake_condition`).
        source: the model or run folder it was loaded from (model kinds), else None.
        record: what a manifest records about the model: {"run", "version", "step", "checkpoint_sha256"}
            (model kinds), else {}.
        window: the synthesis pipeline's window-level `generate(window_image, boxes_in_window, seeds)`
            (model kinds), for callers that hand the pipeline a window themselves; else None.
        info: the model's `synthesis.pipeline.ModelInfo` (window, spacing, box sizes; model kinds), else None.
    """

    name: str
    kind: str
    make: Make = field(repr=False)
    steps: int | None = None
    sampler: str | None = None
    uptake_conditioned: bool = False
    source: str | None = None
    record: dict = field(default_factory=dict, repr=False)
    window: Callable | None = field(default=None, repr=False)
    info: object = field(default=None, repr=False)

    def __call__(self, suv: np.ndarray, affine: np.ndarray, box: Sequence[int], seed: int,
                 suv_mean: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One tumor into `box` of `suv` (SUV, (X, Y, Z)); returns (suv_out, mask) on the same grid."""
        return self.make(suv, np.asarray(affine, dtype=np.float64), tuple(int(v) for v in box), int(seed), suv_mean)


def build_generator(kind: str, source: str | Path | None = None, *, steps: int | None = None,
                    sampler: str | None = None, device: str = "auto", reference=None, seed: int = 0,
                    grid: Sequence[int] | None = None, model=None, name: str | None = None,
                    guidance: float | None = None, match_uptake: bool = True) -> TumorGenerator:
    """Build the generator of `kind`.

    Args:
        kind: one of `KINDS`.
        source: tumorgen: None (the bundled model), a bundled name, an exported model folder or a run
            folder; difftumor/bld/medfusion/hagan: the `train-baseline` run folder. Not for the other kinds.
        steps: sampling steps; None: the model's own (`flow.sample_steps`, `diffusion.sample_steps`,
            `medfusion.sample_steps`). Not for hagan, which generates in one pass.
        sampler: tumorgen: "euler" (or None); difftumor/bld: "ddim" (default) or "ddpm"; medfusion: None
            (its own: DDIM with eta = 1, i.e. "ddpm") or either. Not for hagan.
        device: "auto", "cpu" or "cuda".
        reference: syntumor/blob: `(suv_volumes, masks)` of real tumors their uptake is fitted to.
        seed: syntumor's own seed (its per-sample draws come from the call's seed).
        grid: the grid the scans come on, checked against a model trained on whole volumes (whose
            window must be that grid); box-window models take any grid.
        model: tumorgen: an already loaded `api.TumorGen` (then `source` is not read).
        name: the record's name; default: the kind, with steps (and sampler) for model kinds.
        guidance: tumorgen: classifier-free guidance toward a told uptake; None: the model's `flow.guidance`.
        match_uptake: tumorgen: a told uptake made exact (`synthesis.uptake_match`); False: the network's own.
    """
    if kind not in KINDS:
        raise TumorGenError(f"unknown generator {kind!r}; choose from {', '.join(KINDS)}")
    if steps is not None and steps < 1:
        raise TumorGenError(f"sampling steps must be >= 1, got {steps}")
    if kind == "tumorgen":
        generator = _tumorgen(source, steps=steps, sampler=sampler, device=device, model=model, grid=grid,
                              guidance=guidance, match_uptake=match_uptake)
    elif guidance is not None:
        raise TumorGenError(f"guidance applies to tumorgen only, not {kind}")
    elif kind == "vae-roundtrip":
        generator = _roundtrip(source, device=device, model=model, grid=grid)
    elif kind in BASELINE_KINDS:
        if kind == "hagan" and (steps is not None or sampler is not None):
            raise TumorGenError("hagan generates in one pass: sampling steps and a sampler do not apply to it")
        if kind in ("difftumor", "bld"):
            sampler = sampler or "ddim"
        generator = _baseline(kind, source, steps=steps, sampler=sampler, device=device, grid=grid)
    elif kind in REFERENCE_KINDS:
        if reference is None or not len(reference[0]):
            raise TumorGenError(f"{kind} needs reference tumors (SUV volumes and masks) to fit its uptake to")
        images, masks = reference
        if kind == "syntumor":
            generator = syntumor_generator(SynTumor(suv_stats=SuvStats.from_tumors(images, masks), seed=seed))
        else:
            generator = _blob(reference_uptake(images, masks))
    else:
        generator = TumorGenerator(name="empty", kind="empty", make=_empty)
    return generator if name is None else replace(generator, name=name)


def with_suv_mean(generator: TumorGenerator, suv_mean: float | None) -> TumorGenerator:
    """The generator with every tumor's mean SUV fixed at `suv_mean` (None: unchanged), for jobs that call
    it without one (augment, `RandTumorSynthesisd`)."""
    if suv_mean is None:
        return generator
    if not suv_mean > 0:
        raise TumorGenError(f"the mean SUV must be a positive SUV, got {suv_mean}")
    if not generator.uptake_conditioned:
        raise TumorGenError(f"{generator.name} cannot be given a mean SUV: only a TumorGen model trained with "
                            "flow.uptake_condition takes one")
    make = generator.make
    return replace(generator, make=lambda suv, affine, box, seed, _asked=None: make(suv, affine, box, seed, suv_mean))


def as_generator(generator=None, *, steps: int | None = None, guidance: float | None = None) -> Callable:
    """A `TumorGen`, a `SynTumor`, a `TumorGenerator` or a `(suv, affine, box, seed) -> (suv, mask)`
    callable, as something to call like that; None: the bundled TumorGen model."""
    from tumorgen.api import TumorGen

    if generator is None or isinstance(generator, TumorGen):
        return build_generator("tumorgen", model=generator, steps=steps, guidance=guidance)
    if guidance is not None:
        raise TumorGenError("guidance applies to a TumorGen model (None, a TumorGen), not to a built generator")
    if isinstance(generator, SynTumor):
        return syntumor_generator(generator)
    if callable(generator):
        return generator
    raise TypeError(f"generator must be a TumorGen, a SynTumor or a callable, got {type(generator).__name__}")


def syntumor_generator(syntumor) -> TumorGenerator:
    """A `baselines.syntumor.SynTumor` as a generator: its tumor inside the box, drawn from the seed."""

    def make(suv, affine, box, seed, suv_mean):
        return syntumor.generate(suv, box=box, rng=np.random.default_rng([seed, 2]))

    return TumorGenerator(name="syntumor", kind="syntumor", make=make)


def reference_uptake(images, masks) -> float:
    """The median over reference tumors of their mean SUV."""
    return float(np.median([np.asarray(s)[np.asarray(m) > 0].mean() for s, m in zip(images, masks)]))


def _empty(suv, affine, box, seed, suv_mean):
    return empty_tumor(suv)


def _blob(uptake: float) -> TumorGenerator:
    def make(suv, affine, box, seed, suv_mean):
        return blob_tumor(suv, box, uptake_suv=uptake)

    return TumorGenerator(name="blob", kind="blob", make=make, record={"uptake_suv": uptake})


def _check_grid(info, grid, where: Path) -> None:
    """A model trained on whole volumes needs scans on its window's grid; a box-window model takes any."""
    if grid is not None and info.window != "box" and tuple(info.size) != tuple(int(s) for s in grid):
        raise fail_on(where, f"describes a {tuple(info.size)} model window but the scans' grid is "
                             f"{tuple(int(s) for s in grid)}; generate into the PREP the model was trained on")


def _tumorgen(source, *, steps, sampler, device, model, grid, guidance=None, match_uptake=True) -> TumorGenerator:
    from tumorgen.api import TumorGen
    from tumorgen.synthesis.generate import model_generator

    if sampler not in (None, "euler"):
        raise TumorGenError(f"sampler {sampler} does not apply to tumorgen, which samples with euler")
    tg = model if model is not None else TumorGen.load(source, device=device)
    _check_grid(tg.info, grid, tg.run_dir)
    steps = tg.sample_steps if steps is None else int(steps)

    def make(suv, affine, box, seed, suv_mean):
        result = tg.synthesize(suv, affine=affine, box=box, num=1, steps=steps, seed=seed, suv_mean=suv_mean,
                               guidance=guidance, match_uptake=match_uptake)[0]
        return result.image, result.mask

    return TumorGenerator(name=f"tumorgen-{steps}", kind="tumorgen", make=make, steps=steps, sampler="euler",
                          uptake_conditioned=bool(tg.run.models.uptake_condition), source=str(tg.run_dir),
                          record=tg.model_record(),
                          window=model_generator(tg.run, steps=steps, device=tg.device, guidance=guidance),
                          info=tg.info)


def _roundtrip(source, *, device, model, grid) -> TumorGenerator:
    from tumorgen.api import TumorGen, as_volume
    from tumorgen.synthesis.generate import roundtrip_generator
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    tg = model if model is not None else TumorGen.load(source, device=device)
    _check_grid(tg.info, grid, tg.run_dir)
    window = roundtrip_generator(tg.run, device=tg.device)

    def make(suv, affine, box, seed, suv_mean):
        scan = as_volume(suv, affine=affine, what="scan")
        result = synthesize_into_scan(scan=scan, boxes=[box], generate=window, model_info=tg.info, num=1, seed=seed)[0]
        return result.image, result.mask

    return TumorGenerator(name="vae-roundtrip", kind="vae-roundtrip", make=make, source=str(tg.run_dir),
                          record=tg.model_record(), window=window, info=tg.info)


def _baseline(kind, source, *, steps, sampler, device, grid) -> TumorGenerator:
    from tumorgen.api import as_volume
    from tumorgen.baselines.generators import load_baseline_generator
    from tumorgen.synthesis.generate import resolve_inference_device
    from tumorgen.synthesis.pipeline import ModelInfo, synthesize_into_scan

    if source is None:
        raise TumorGenError(f"{kind} needs its run folder (`tumorgen train-baseline --method {kind}`)")
    if sampler is not None and sampler not in BASELINE_SAMPLERS:
        raise TumorGenError(f"sampler {sampler} does not apply to {kind}; use ddim or ddpm")
    run_dir = Path(source)
    data_json = run_dir / "data.json"
    if not data_json.is_file():
        raise fail_on(run_dir, "is not a training run folder (it has no data.json)")
    try:
        info = ModelInfo.from_dict(json.loads(data_json.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise fail_on(data_json, f"has no readable model window ({err})") from None
    _check_grid(info, grid, data_json)
    window = load_baseline_generator(run_dir, method=sampler, steps=steps, device=resolve_inference_device(device))
    if window.baseline.kind != kind:
        raise fail_on(run_dir, f"holds a {window.baseline.kind} model, not {kind}")

    def make(suv, affine, box, seed, suv_mean):
        scan = as_volume(suv, affine=affine, what="scan")
        result = synthesize_into_scan(scan=scan, boxes=[box], generate=window, model_info=info, num=1, seed=seed)[0]
        return result.image, result.mask

    record = {"run": str(run_dir), "version": __version__, "step": window.baseline.step,
              "checkpoint_sha256": sha256_file(run_dir / "checkpoints" / "last.pt")}
    name = kind if window.method is None else f"{kind}-{window.method}-{window.steps}"  # HA-GAN: no sampler
    return TumorGenerator(name=name, kind=kind, make=make, steps=window.steps, sampler=window.method,
                          source=str(run_dir), record=record, window=window, info=info)

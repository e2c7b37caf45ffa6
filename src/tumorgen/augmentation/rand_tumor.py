"""Synthetic tumors for a segmenter's training data: one box, a new tumor, the label it belongs to.

What synthetic tumors are for is training a segmenter. This module puts one generated tumor into one
training case and is shared by two users: `RandTumorSynthesisd`, a MONAI transform for people with
their own training loops (synthesis on the fly), and the downstream study (`evaluation.downstream`),
which builds fixed synthetic training sets. A tumor enters a case in one of two ways, and in
both the scan is unchanged outside one box:

- **regenerate** (the case has a tumor): the box is the largest tumor component's tight box plus
  `margin` voxels a side (grown to `min_box` voxels per axis); the box is erased
  (`data.erase.erase_box`: the background from the shell around it, with the scan's grain), so
  the real tumor cannot leak through, and a new tumor is generated into it. The label is the new mask
  inside the box and the real label outside it. A new mask and texture, in the real context.
- **place**: a box of a tumor's size, its centre drawn in the body (`synthesis.boxes.body_mask`, or a
  given region), at least half of it in that region, and clear of the existing label by `clearance`
  voxels. Nothing is erased (it is healthy tissue); the label is the union of the real label and the
  new mask.

A generator is a `TumorMaker`: `make(suv, affine, box, seed) -> (suv_out, mask)`, SUV in and out on
the scan's grid: a `generators.TumorGenerator` (TumorGen, DiffTumor, BLD, SynTumor, ... from
`generators.build_generator`) or any callable of that signature. Whatever the maker
returns outside the box (SynTumor's blurred rim, for instance) is dropped, and its mask is cut to the
box, so "unchanged outside the box" and "the new label lies inside the box" hold for every maker.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage

from tumorgen.data.box_geometry import box_slices
from tumorgen.data.erase import erase_box
from tumorgen.errors import TumorGenError
from tumorgen.generators import TumorGenerator, as_generator, with_suv_mean
from tumorgen.synthesis.boxes import Box, body_mask

TumorMaker = Callable[[np.ndarray, np.ndarray, Box, int], tuple[np.ndarray, np.ndarray]]
MODES = ("auto", "regenerate", "place")
BOX_MARGIN = 2  # voxels around the real tumor's tight box, as in the paired protocol
MIN_BOX = 8  # voxels per axis: two latent voxels of a factor-4 VAE, room for a tumor and its rim
CLEARANCE = 2  # voxels between a placed box and the existing label (the PET blur of a real tumor)
ERASE_SHELL = 3  # voxels around the box that the erased background is taken from
PLACE_TRIES = 20  # box centres drawn before placing gives up
MIN_REGION_FRACTION = 0.5  # a placed box lies at least this much in the region (not in the air)


@dataclass(frozen=True)
class InsertedTumor:
    """One synthetic tumor in one case.

    Args:
        image: (X, Y, Z) float32 SUV, equal to the input outside `box`.
        label: (X, Y, Z) uint8: the new mask unioned with the real label (erased inside the box when
            the box was regenerated).
        mask: (X, Y, Z) uint8, the new tumor alone, zero outside `box`.
        box: the half-open box.
        mode: "regenerate" or "place".
    """

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    box: Box
    mode: str


def regeneration_box(label: np.ndarray, *, margin: int = BOX_MARGIN, min_box: int = MIN_BOX) -> Box | None:
    """The largest tumor component's tight box + `margin`, grown to `min_box` a side.

    None when there is no tumor, or when the box would be the whole volume (nothing to erase it from).

    The box is shifted, then clipped, to lie inside the volume. Only the largest component: a box
    around all the lesions of a multi-lesion scan could cover most of the scan.
    """
    label = np.asarray(label) > 0
    if not label.any():
        return None
    components, count = ndimage.label(label)
    if count > 1:
        sizes = np.bincount(components.ravel())[1:]
        label = components == 1 + int(np.argmax(sizes))
    coords = np.argwhere(label)  # (V, 3)
    lo, hi = coords.min(axis=0) - margin, coords.max(axis=0) + 1 + margin
    box = _fit_box(lo, hi, np.asarray(label.shape), min_box)
    if box == (0, 0, 0, *label.shape):
        return None  # no shell left to erase the box from
    return box


def _fit_box(lo: np.ndarray, hi: np.ndarray, shape: np.ndarray, min_box: int) -> Box:
    """Grow [lo, hi) to `min_box` per axis around its centre, then shift and clip it into the volume."""
    extent = np.maximum(hi - lo, np.minimum(min_box, shape))
    lo = lo - (extent - (hi - lo)) // 2
    lo = np.clip(lo, 0, np.maximum(shape - extent, 0))
    hi = np.minimum(lo + extent, shape)
    return tuple(int(v) for v in (*lo, *hi))  # type: ignore[return-value]


def placement_box(label: np.ndarray, *, size: Sequence[int], rng: np.random.Generator, region: np.ndarray,
                  clearance: int = CLEARANCE, tries: int = PLACE_TRIES,
                  min_region_fraction: float = MIN_REGION_FRACTION) -> Box | None:
    """A box of `size` voxels centred on a `region` voxel, clear of the label (None when none fits).

    Args:
        label: (X, Y, Z) the existing tumor label (zeros for a healthy case).
        size: (sx, sy, sz) box extent in voxels (clipped to the volume).
        rng: the only source of randomness.
        region: (X, Y, Z) bool, where the box centre may fall (e.g. the body).
        clearance: voxels the box keeps from every labelled voxel.
        tries: centres drawn before giving up.
        min_region_fraction: the share of the box that must lie in `region`.
    """
    label = np.asarray(label) > 0
    shape = np.asarray(label.shape)
    extent = np.minimum(np.maximum(np.asarray(size, dtype=np.int64), 1), shape)
    centres = np.flatnonzero(region)
    if centres.size == 0:
        return None
    near_tumor = ndimage.binary_dilation(label, iterations=clearance) if clearance > 0 and label.any() else label
    for _ in range(tries):
        centre = np.array(np.unravel_index(centres[rng.integers(centres.size)], label.shape))
        lo = np.clip(centre - extent // 2, 0, shape - extent)
        box = tuple(int(v) for v in (*lo, *(lo + extent)))
        inside = box_slices(box)
        if near_tumor[inside].any():
            continue
        if region[inside].mean() < min_region_fraction:
            continue
        return box  # type: ignore[return-value]
    return None


def insert_tumor(suv: np.ndarray, label: np.ndarray, *, affine: np.ndarray, box: Sequence[int], make: TumorMaker,
                 seed: int, erase: bool, erase_shell: int = ERASE_SHELL) -> InsertedTumor:
    """Generate one tumor into `box` of a scan and return the new scan and label.

    Args:
        suv: (X, Y, Z) PET in SUV; not modified.
        label: (X, Y, Z) the real tumor label (zeros for a healthy case).
        affine: (4, 4) voxel-to-world map of the scan.
        box: half-open voxel box.
        make: the generator (see the module docstring).
        seed: seeds the erase's grain and the generator.
        erase: True to regenerate the box (erase it, drop the real label inside it), False to place.
        erase_shell: voxels around the box the erased background comes from.
    """
    suv = np.asarray(suv, dtype=np.float32)
    label = (np.asarray(label) > 0).astype(np.uint8)
    if suv.ndim != 3 or label.shape != suv.shape:
        raise ValueError(f"suv and label must be 3D arrays of one shape, got {suv.shape} and {label.shape}")
    inside = box_slices(box)
    if erase:
        base = erase_box(suv, box, rng=np.random.default_rng([int(seed), 1]), shell=erase_shell).astype(np.float32)
        kept = label.copy()
        kept[inside] = 0  # the real tumor in the box was erased with it
    else:
        base, kept = suv.copy(), label
    generated, generated_mask = make(base, np.asarray(affine, dtype=np.float64), tuple(int(v) for v in box), int(seed))
    image = base.copy()
    image[inside] = np.asarray(generated, dtype=np.float32)[inside]  # the scan outside the box is never touched
    mask = np.zeros(suv.shape, np.uint8)
    mask[inside] = np.asarray(generated_mask)[inside] > 0
    return InsertedTumor(image=image, label=np.maximum(kept, mask), mask=mask, box=tuple(int(v) for v in box),
                         mode="regenerate" if erase else "place")


# ---------------------------------------------------------------------------------------------------
# The MONAI transform.


class RandTumorSynthesisd(RandomizableTransform, MapTransform):
    """With probability `prob`, put one synthetic tumor into a training sample and its label.

    The sample holds a PET image in SUV and a tumor label, both channel first `(1, X, Y, Z)`, as numpy
    arrays, tensors or MetaTensors (the affine is read from a MetaTensor, else `affine`); apply it
    before intensity scaling. Outputs keep the inputs' types (a MetaTensor keeps its metadata).

    Which way the tumor goes in (see the module docstring): `mode="regenerate"` at the existing
    tumor's box, `"place"` in healthy tissue, `"auto"` regenerates with `regenerate_prob` when the
    sample has a tumor and places otherwise. A placement that finds no room regenerates instead
    when there is a tumor, else the sample is left as it is; so does a generator's refusal (a box the
    model cannot hold), with a warning. All randomness comes from `self.R` (seed it with
    `set_random_state`), so the same seed gives the same samples.

    Args:
        keys: the image key and the label key, in that order.
        generator: a loaded `tumorgen.TumorGen`, a `baselines.syntumor.SynTumor`, or a maker
            `(suv, affine, box, seed) -> (suv, mask)`; None (default): the bundled TumorGen model.
        prob: probability that a sample gets a tumor.
        mode: "auto", "regenerate" or "place".
        regenerate_prob: with mode "auto", the probability of regenerating (when there is a tumor).
        box_sizes: placed boxes' sizes in voxels, one drawn per sample; None: the sample's own tumor
            box size, else uniform per axis in `box_size_range`.
        box_size_range: (min, max) voxels per axis for placed boxes in healthy samples.
        region_key: a key holding a mask of where placed boxes may go (e.g. an organ); default the body.
        box_key: if given, the sample's box `(x0, y0, z0, x1, y1, z1)` (int64; -1s when untouched) is
            stored under this key.
        affine: the voxel-to-world map for inputs without one (default: identity, 1 mm voxels).
        steps: sampling steps of a TumorGen generator (None: the model's own `flow.sample_steps`).
        suv_mean: the tumors' mean SUV for a TumorGen generator, each tumor scaled to exactly that
            inside its mask (`synthesis.uptake_match`) (None: drawn per sample from the
            training tumors').
        guidance: classifier-free guidance toward `suv_mean`, for a TumorGen model trained with
            `flow.uptake_dropout` given as None or a `TumorGen` (None: the model's `flow.guidance`; a
            drawn uptake always samples at 1).
        margin, min_box, clearance: see `regeneration_box` and `placement_box`.
        allow_missing_keys: MONAI's; a missing image or label then leaves the sample as it is.
    """

    def __init__(self, keys: Sequence[Hashable] = ("image", "label"), *, generator=None, prob: float = 0.5,
                 mode: str = "auto", regenerate_prob: float = 0.5, box_sizes: Sequence[Sequence[int]] | None = None,
                 box_size_range: tuple[int, int] = (8, 24), region_key: Hashable | None = None,
                 box_key: Hashable | None = None, affine: np.ndarray | None = None, steps: int | None = None,
                 suv_mean: float | None = None, guidance: float | None = None,
                 margin: int = BOX_MARGIN, min_box: int = MIN_BOX, clearance: int = CLEARANCE,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image key, label key), got {self.keys}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= regenerate_prob <= 1.0:
            raise ValueError(f"regenerate_prob must be in [0, 1], got {regenerate_prob}")
        low, high = (int(v) for v in box_size_range)
        if not 1 <= low <= high:
            raise ValueError(f"box_size_range must satisfy 1 <= min <= max, got {box_size_range}")
        if box_sizes is not None:
            box_sizes = [tuple(int(v) for v in s) for s in box_sizes]
            if not box_sizes or any(len(s) != 3 or min(s) < 1 for s in box_sizes):
                raise ValueError(f"box_sizes must be a non-empty list of 3 positive ints, got {box_sizes}")
        if margin < 0 or min_box < 1 or clearance < 0:
            raise ValueError("margin and clearance must be >= 0 and min_box >= 1")
        if suv_mean is not None and not suv_mean > 0:
            raise ValueError(f"suv_mean must be a positive SUV, got {suv_mean}")
        made = as_generator(generator, steps=steps, guidance=guidance)
        if suv_mean is not None and isinstance(made, TumorGenerator):
            made = with_suv_mean(made, suv_mean)
        self.make = made
        self.mode = mode
        self.regenerate_prob = float(regenerate_prob)
        self.box_sizes = box_sizes
        self.box_size_range = (low, high)
        self.region_key = region_key
        self.box_key = box_key
        self.affine = None if affine is None else np.asarray(affine, dtype=np.float64)
        self.margin, self.min_box, self.clearance = int(margin), int(min_box), int(clearance)
        self._seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)  # self._do_transform
        self._seed = int(self.R.randint(0, 2**31 - 1))  # every other draw derives from it

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        image_key, label_key = self.keys
        untouched = np.full(6, -1, dtype=np.int64)
        if self.box_key is not None:
            d[self.box_key] = untouched
        if not self._do_transform or image_key not in d or label_key not in d:
            if not self.allow_missing_keys and (image_key not in d or label_key not in d):
                raise KeyError(f"the sample lacks {image_key!r} or {label_key!r}")
            return d
        image, label = d[image_key], d[label_key]
        suv, real = _spatial(image, image_key), _spatial(label, label_key) > 0
        if real.shape != suv.shape:
            raise ValueError(f"{image_key} {suv.shape} and {label_key} {real.shape} differ in shape")
        affine = _affine_of(image, self.affine)
        region = _spatial(d[self.region_key], self.region_key) > 0 if self.region_key is not None else body_mask(suv)
        inserted = self._insert(suv, real.astype(np.uint8), affine, region)
        if inserted is None:
            return d
        d[image_key] = _like(inserted.image, image)
        d[label_key] = _like(inserted.label, label)
        if self.box_key is not None:
            d[self.box_key] = np.asarray(inserted.box, dtype=np.int64)
        return d

    def _insert(self, suv, label, affine, region) -> InsertedTumor | None:
        rng = np.random.default_rng(self._seed)
        own_box = regeneration_box(label, margin=self.margin, min_box=self.min_box)
        regenerate = own_box is not None and (
            self.mode == "regenerate" or (self.mode == "auto" and rng.random() < self.regenerate_prob))
        if self.mode == "regenerate" and own_box is None:
            return None  # nothing to regenerate in a healthy sample
        box = own_box
        if not regenerate:
            if self.box_sizes is not None:
                size = self.box_sizes[rng.integers(len(self.box_sizes))]
            elif own_box is not None:
                size = [b - a for a, b in zip(own_box[:3], own_box[3:])]
            else:
                size = rng.integers(self.box_size_range[0], self.box_size_range[1] + 1, size=3)
            placed = placement_box(label, size=size, rng=rng, region=region, clearance=self.clearance)
            if placed is None and own_box is None:
                return None
            box, regenerate = (placed, False) if placed is not None else (own_box, True)
        try:
            return insert_tumor(suv, label, affine=affine, box=box, make=self.make, seed=self._seed, erase=regenerate)
        except TumorGenError as err:
            warnings.warn(f"RandTumorSynthesisd left a sample unchanged: {err}", stacklevel=2)
            return None


def _spatial(value, key) -> np.ndarray:
    """(1, X, Y, Z) array / tensor / MetaTensor -> (X, Y, Z) numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"{key!r} must be channel first with one channel, (1, X, Y, Z); got shape {array.shape}")
    return array[0]


def _affine_of(image, default: np.ndarray | None) -> np.ndarray:
    affine = getattr(image, "affine", None)
    if affine is not None:
        affine = affine.detach().cpu().numpy() if hasattr(affine, "detach") else np.asarray(affine)
        if affine.shape == (4, 4):
            return affine.astype(np.float64)
    return default if default is not None else np.eye(4)


def _like(array: np.ndarray, template):
    """`array` (X, Y, Z) as (1, X, Y, Z) of `template`'s type, dtype and device (MetaTensors keep their meta)."""
    from monai.utils import convert_to_dst_type

    out, *_ = convert_to_dst_type(array[None], template, dtype=getattr(template, "dtype", None))
    return out

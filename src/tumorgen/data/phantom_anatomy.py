"""Procedural anatomy for PET phantoms: a torso (AutoPET-like) and a head and neck (HECKTOR-like).

Organs are simple solids (ellipsoids, elliptic cylinders, shells) placed in world millimetres around
the grid centre, so the anatomy keeps its physical size whatever the grid: a larger `--size` gives
finer voxels, not a larger patient. Each organ gets a typical FDG uptake (SUV) and a CT number (HU);
later organs are painted over earlier ones. A few per-case random jitters (body size, organ uptake)
make a dataset of phantoms vary as patients do.

Axes follow NIfTI RAS+: x increases towards the patient's right, y towards anterior, z towards
superior. The heart sits at -x (the patient's left), the liver at +x. Organ masks in `organs` are the
solids as painted, so they may overlap; "lungs" and "oropharynx" (where tumors go) are exclusive of
their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tumorgen.data.phantom_scanner import smooth_noise

# Physical field of view (mm) per region; spacing = FOV / size unless the caller gives one.
# Torso: a 300 x 210 mm chest fits with air around it; 320 mm over 64 voxels is 5 mm, like AutoPET's
# ~4 mm PET voxels. Head and neck: head, neck and shoulder tops; 240 / 64 = 3.75 mm, like HECKTOR.
FIELD_OF_VIEW_MM = {"torso": (320.0, 320.0, 256.0), "head-neck": (240.0, 240.0, 240.0)}

# Where tumors go in each region (a key of Anatomy.organs).
TUMOR_REGION = {"torso": "lungs", "head-neck": "oropharynx"}


@dataclass(frozen=True)
class Anatomy:
    """Noise-free maps of one phantom body."""

    activity: np.ndarray  # (X, Y, Z) true SUV, float64
    hounsfield: np.ndarray  # (X, Y, Z) true CT number (HU), float64
    organs: dict[str, np.ndarray]  # name -> (X, Y, Z) bool


class _Canvas:
    """World coordinates of the voxel centres and the SUV/HU maps being painted."""

    def __init__(self, *, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
        self.x = axes[0][:, None, None]  # (X, 1, 1)
        self.y = axes[1][None, :, None]  # (1, Y, 1)
        self.z = axes[2][None, None, :]  # (1, 1, Z)
        self.shape = shape
        self.spacing = spacing
        self.suv = np.zeros(shape)
        self.hu = np.full(shape, -1000.0)
        self.organs: dict[str, np.ndarray] = {}

    def ellipsoid(self, center, semi) -> np.ndarray:
        (cx, cy, cz), (a, b, c) = center, semi
        return ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2 + ((self.z - cz) / c) ** 2 <= 1.0

    def cylinder(self, center_xy, semi_xy, z_range=(-np.inf, np.inf)) -> np.ndarray:
        """An elliptic cylinder along z, between z_range[0] and z_range[1] (mm)."""
        (cx, cy), (a, b) = center_xy, semi_xy
        disc = ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2 <= 1.0
        slab = (self.z >= z_range[0]) & (self.z <= z_range[1])
        return np.broadcast_to(disc & slab, self.shape).copy()

    def z_bands(self, *, period: float, width: float, offset: float = 0.0) -> np.ndarray:
        """Slabs `width` mm thick every `period` mm along z (vertebrae, ribs)."""
        return np.broadcast_to(np.mod(self.z - offset, period) < width, self.shape)

    def paint(self, mask: np.ndarray, *, suv: float, hu: float, name: str | None = None) -> np.ndarray:
        self.suv[mask] = suv
        self.hu[mask] = hu
        if name is not None:
            self.organs[name] = self.organs.get(name, np.zeros(self.shape, bool)) | mask
        return mask

    def finish(self, rng: np.random.Generator, body: np.ndarray) -> Anatomy:
        # Tissue is not perfectly uniform in PET: a mild smooth texture (~6 %) inside the body.
        texture = 1.0 + 0.06 * smooth_noise(self.shape, [8.0 / s for s in self.spacing], rng)
        activity = np.where(body, self.suv * np.clip(texture, 0.7, 1.3), 0.0)
        organs = {name: mask.copy() for name, mask in self.organs.items()}
        organs["body"] = body.copy()
        return Anatomy(activity=activity, hounsfield=self.hu.copy(), organs=organs)


def build_anatomy(*, region: str, shape, spacing, rng: np.random.Generator) -> Anatomy:
    """Build the noise-free anatomy of one phantom.

    Args:
        region: "torso" or "head-neck".
        shape: the grid (X, Y, Z) in voxels.
        spacing: voxel size (mm) per axis.
        rng: the random generator for per-case variation.
    """
    canvas = _Canvas(shape=tuple(shape), spacing=tuple(spacing))
    if region == "torso":
        return _torso(canvas, rng)
    if region == "head-neck":
        return _head_neck(canvas, rng)
    raise ValueError(f"region must be one of {sorted(TUMOR_REGION)}, got {region!r}")


def _shell(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    return outer & ~inner


def _torso(c: _Canvas, rng: np.random.Generator) -> Anatomy:
    w, ap = 150.0 * rng.uniform(0.92, 1.04), 105.0 * rng.uniform(0.92, 1.04)  # body semi-axes (mm)
    lung_scale = rng.uniform(0.9, 1.05)
    body = c.cylinder((0, 0), (w, ap))
    c.paint(body, suv=rng.uniform(0.8, 1.2), hu=45)  # muscle and soft tissue
    c.paint(_shell(c.cylinder((0, 0), (w - 12, ap - 12)), body), suv=0.35, hu=-95)  # subcutaneous fat

    lungs_raw = (
        c.ellipsoid((62, 5, 25), (48 * lung_scale, 68 * lung_scale, 95))
        | c.ellipsoid((-62, 5, 25), (46 * lung_scale, 66 * lung_scale, 92))
    )
    liver = c.ellipsoid((60, 10, -105), (95, 85, 62)) & ~lungs_raw & body
    c.paint(liver, suv=rng.uniform(2.0, 2.5), hu=55, name="liver")
    spleen = c.ellipsoid((-85, -30, -100), (28, 40, 42)) & ~lungs_raw & body
    c.paint(spleen, suv=rng.uniform(1.7, 2.1), hu=45, name="spleen")

    mediastinum = c.cylinder((0, 5), (26, 58), (-40, 128)) & body
    c.paint(mediastinum, suv=1.4, hu=25, name="mediastinum")
    aorta = c.cylinder((-14, -42), (12, 12), (-128, 128)) | c.cylinder((0, 20), (13, 13), (40, 128))
    c.paint(aorta & body, suv=1.8, hu=40, name="aorta")  # blood pool
    heart_center, heart_semi = (-22, 32, -28), (54, 44, 44)
    heart = c.ellipsoid(heart_center, heart_semi)
    cavity = c.ellipsoid(heart_center, [s - 11 for s in heart_semi])
    c.paint(heart, suv=rng.uniform(3.0, 6.0), hu=40, name="heart")  # myocardium: hot in FDG
    c.paint(cavity, suv=1.8, hu=40)  # ventricular blood pool
    c.organs["mediastinum"] |= heart

    spine = c.cylinder((0, -72), (19, 17))
    canal = c.cylinder((0, -96), (7, 7))
    arch = c.cylinder((0, -96), (13, 12)) & ~canal
    c.paint(spine | arch, suv=rng.uniform(1.3, 1.8), hu=450, name="spine")  # marrow-rich bone
    c.paint(_shell(c.cylinder((0, -72), (16, 14)), spine), suv=1.0, hu=950)  # cortical rim
    c.paint(spine & c.z_bands(period=26, width=5), suv=0.8, hu=90)  # intervertebral discs
    c.paint(canal, suv=0.6, hu=15)

    lungs = lungs_raw & c.cylinder((0, 0), (w - 20, ap - 20))
    lungs &= ~ndimage.binary_dilation(heart | mediastinum | aorta | spine | arch, iterations=1)
    rib_ring = _shell(c.cylinder((0, 0), (w - 24, ap - 24)), c.cylinder((0, 0), (w - 15, ap - 15)))
    ribs = rib_ring & c.z_bands(period=26, width=9, offset=5) & (c.z > -90) & (c.y < 70)
    c.paint(ribs & ~lungs, suv=0.9, hu=700, name="ribs")
    c.paint(lungs, suv=rng.uniform(0.35, 0.55), hu=-830, name="lungs")
    return c.finish(rng, body)


def _head_neck(c: _Canvas, rng: np.random.Generator) -> Anatomy:
    s = rng.uniform(0.94, 1.04)  # head size
    head = c.ellipsoid((0, 5, 40), (70 * s, 88 * s, 78 * s))
    face = c.ellipsoid((0, 30, -8), (52, 58, 48))
    neck = c.cylinder((0, 2), (56, 60), (-130, 20))
    shoulders = c.ellipsoid((0, -5, -175), (170, 85, 95))
    body = head | face | neck | shoulders
    c.paint(body, suv=rng.uniform(0.9, 1.3), hu=45)
    soft = c.ellipsoid((0, 5, 40), (64 * s, 82 * s, 72 * s)) | c.ellipsoid((0, 30, -8), (46, 52, 42))
    soft |= c.cylinder((0, 2), (50, 54), (-130, 20)) | c.ellipsoid((0, -5, -175), (164, 79, 89))
    c.paint(body & ~soft, suv=0.4, hu=-95)  # subcutaneous fat

    vault = _shell(c.ellipsoid((0, 5, 40), (63 * s, 81 * s, 71 * s)), c.ellipsoid((0, 5, 40), (70 * s, 88 * s, 78 * s)))
    c.paint(vault & (c.z > 0), suv=0.7, hu=1100, name="skull")
    brain = c.ellipsoid((0, 5, 42), (60 * s, 78 * s, 67 * s)) & (c.z > 8)
    cortex_suv = rng.uniform(7.0, 10.0)  # grey matter: the hottest tissue in FDG PET
    c.paint(brain, suv=cortex_suv, hu=38, name="brain")
    white = c.ellipsoid((0, 5, 45), (48 * s, 64 * s, 50 * s)) & brain
    c.paint(white, suv=0.45 * cortex_suv, hu=30)
    nuclei = c.ellipsoid((18, 8, 38), (11, 16, 11)) | c.ellipsoid((-18, 8, 38), (11, 16, 11))
    c.paint(nuclei & brain, suv=0.95 * cortex_suv, hu=38)  # basal ganglia and thalami
    cerebellum = c.ellipsoid((0, -40, 8), (46, 30, 20)) & ~brain
    c.paint(cerebellum, suv=0.75 * cortex_suv, hu=38, name="brain")
    eyes = c.ellipsoid((32, 70, 28), (12, 12, 12)) | c.ellipsoid((-32, 70, 28), (12, 12, 12))
    c.paint(eyes, suv=0.7, hu=10, name="eyes")
    sinuses = c.ellipsoid((26, 52, 2), (13, 14, 14)) | c.ellipsoid((-26, 52, 2), (13, 14, 14))
    c.paint(sinuses, suv=0.0, hu=-1000)

    tongue = c.ellipsoid((0, 45, -22), (30, 28, 15))
    c.paint(tongue, suv=rng.uniform(1.3, 1.8), hu=60, name="tongue")
    parotids = c.ellipsoid((48, 2, -6), (13, 20, 22)) | c.ellipsoid((-48, 2, -6), (13, 20, 22))
    c.paint(parotids, suv=rng.uniform(1.8, 2.6), hu=-20, name="parotids")
    submandibular = c.ellipsoid((33, 36, -46), (12, 11, 9)) | c.ellipsoid((-33, 36, -46), (12, 11, 9))
    c.paint(submandibular, suv=rng.uniform(1.6, 2.2), hu=40, name="submandibular")

    mandible_arc = _shell(c.cylinder((0, 12), (42, 50)), c.cylinder((0, 12), (48, 56)))
    mandible = mandible_arc & (c.y > 14) & (c.z > -48) & (c.z < -30)
    rami = (c.cylinder((44, 12), (4, 8)) | c.cylinder((-44, 12), (4, 8))) & (c.z > -40) & (c.z < -2)
    c.paint(mandible | rami, suv=0.6, hu=1300, name="mandible")

    spine = c.cylinder((0, -28), (12, 11), (-130, -2))
    canal = c.cylinder((0, -46), (6, 6), (-130, -2))
    arch = c.cylinder((0, -46), (11, 10), (-130, -2)) & ~canal
    c.paint(spine | arch, suv=rng.uniform(1.0, 1.5), hu=480, name="spine")
    c.paint(spine & c.z_bands(period=18, width=4), suv=0.7, hu=90)
    c.paint(canal, suv=0.7, hu=15)

    airway = c.cylinder((0, 16), (11, 7), (-130, 10)) | (
        (np.abs(c.x) < 8) & (c.y > 16) & (c.y < 78) & (c.z > -2) & (c.z < 16)
    )
    oropharynx = c.ellipsoid((0, 20, -28), (36, 28, 28)) & body & ~airway & ~spine & ~arch
    oropharynx &= ~ndimage.binary_dilation(mandible | rami, iterations=1)
    c.organs["oropharynx"] = oropharynx
    tonsils = (c.ellipsoid((15, 20, -24), (7, 8, 10)) | c.ellipsoid((-15, 20, -24), (7, 8, 10))) & oropharynx
    c.paint(tonsils, suv=rng.uniform(2.2, 3.5), hu=50, name="tonsils")  # lymphoid tissue: warm in FDG
    c.paint(airway & body, suv=0.0, hu=-1000, name="airway")
    return c.finish(rng, body)

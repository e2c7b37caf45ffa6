"""TumorGen: synthesize 3D tumors and their masks into PET scans.

The heavy modules (torch, MONAI) are imported by the functions that need them, so that
`tumorgen --help` and the error paths stay fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from tumorgen import TumorGen, RandTumorSynthesisd, build_generator` without importing torch at
    `import tumorgen`."""
    if name == "TumorGen":
        from tumorgen.api import TumorGen

        return TumorGen
    if name == "RandTumorSynthesisd":
        from tumorgen.augmentation.rand_tumor import RandTumorSynthesisd

        return RandTumorSynthesisd
    if name in ("TumorGenerator", "build_generator"):
        from tumorgen import generators

        return getattr(generators, name)
    raise AttributeError(f"module 'tumorgen' has no attribute {name!r}")

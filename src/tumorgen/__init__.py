"""TumorGen: synthesize 3D tumors and their masks into PET scans.

The heavy modules (torch, MONAI) are imported by the functions that need them, so that
`tumorgen --help` and the error paths stay fast.
"""

__version__ = "0.1.0"

"""Reading untrusted files (NIfTI, torch files, their SHA-256), writing outputs atomically, and the
voxel spacing of an affine (spacing.py)."""

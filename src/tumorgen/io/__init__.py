"""Reading untrusted NIfTI files and writing outputs atomically."""

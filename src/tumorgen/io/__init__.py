"""Reading untrusted files (NIfTI, torch files, their SHA-256) and writing outputs atomically."""

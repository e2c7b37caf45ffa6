"""Data: phantoms, dataset readers, preprocessing and the PREP cache."""

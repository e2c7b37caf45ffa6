"""Dataset jobs on top of synthesis: `augment` writes an nnU-Net dataset with synthetic tumors added,
`rand_tumor.RandTumorSynthesisd` inserts tumors on the fly in a MONAI training pipeline.

Both take any `generators.TumorGenerator`; nothing below this package imports it.
"""

"""Writers that hand TumorGen's outputs to other tools (nnU-Net v2 raw datasets)."""

"""Methods TumorGen is compared with, on the same data (and, for the learned ones, the same backbone).

`syntumor` is the rule-based recipe of Hu et al. 2023; the diffusion baselines come with the training
code they share with TumorGen.
"""

from tumorgen.baselines.syntumor import SuvStats, SynTumor

__all__ = ["SuvStats", "SynTumor"]

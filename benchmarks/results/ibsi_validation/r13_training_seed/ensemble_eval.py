"""Scratch: evaluate-paired where the TumorGen model's velocity is the mean of its U-Net and the U-Nets of
the run folders in $ENSEMBLE_WITH (colon-separated; same config and VAE). The first run's refiner and VAE."""
import dataclasses, os, sys
import torch
from torch import nn
import tumorgen.training.run_folder as rf

OTHERS = [p for p in os.environ["ENSEMBLE_WITH"].split(":") if p]
_load_run = rf.load_run


class MeanVelocity(nn.Module):
    def __init__(self, first, others):
        super().__init__()
        self.module = first  # TumorGenModels._bare_unet looks through `module`
        self.others = nn.ModuleList(others)

    def forward(self, *args, **kwargs):
        out = self.module(*args, **kwargs)
        for o in self.others:
            out = out + o(*args, **kwargs)
        return out / (1 + len(self.others))


def ensemble_load_run(run_dir, **kw):
    run = _load_run(run_dir, **kw)
    others = [_load_run(p, **kw).models.unet for p in OTHERS]
    run.models.unet = MeanVelocity(run.models.unet, others)
    print(f"ensemble: {run_dir} + {OTHERS}", file=sys.stderr)
    return run


rf.load_run = ensemble_load_run
from tumorgen.cli import main
sys.exit(main(sys.argv[1:]))

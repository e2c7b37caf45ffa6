"""Scratch: evaluate-paired with the drawn uptake jittered log-normally (sigma from $JITTER) around the training tumor's."""
import os, sys
import numpy as np
import torch
import tumorgen.synthesis.generate as g
from tumorgen.data.intensity import suv_to_model

SIGMA = float(os.environ["JITTER"])
orig = g.uptake_for_samples

def jittered(run, seeds, suv_mean):
    if suv_mean is not None or not run.models.uptake_condition:
        return orig(run, seeds, suv_mean)
    info = run.data_info
    pool = info["tumor_uptake_suv"]
    suvs = []
    for s in seeds:
        rng = np.random.default_rng([int(s), 5])
        v = float(rng.choice(pool)) * float(np.exp(SIGMA * rng.standard_normal()))
        suvs.append(min(v, float(info["suv_max"])))
    return torch.from_numpy(suv_to_model(suvs, suv_max=float(info["suv_max"]), kind=info.get("intensity", "linear")))

g.uptake_for_samples = jittered
from tumorgen.cli import main
sys.exit(main(sys.argv[1:]))

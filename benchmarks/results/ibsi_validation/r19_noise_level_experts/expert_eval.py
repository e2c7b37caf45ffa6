"""Scratch: evaluate-paired where the velocity for t >= $SWITCH comes from another run ($LATE, e.g. a
longer-trained checkpoint of the same recipe): early steps (the tumor's layout) from the run judged,
late steps (its detail) from the late expert. Both runs must share the config's conditioning."""
import os, sys
import torch
import tumorgen.synthesis.generate as g
from tumorgen.training.run_folder import load_run

SWITCH = float(os.environ["SWITCH"])
LATE = load_run(os.environ["LATE"], device="cpu").models
orig = g.guided_velocity

def expert(models, uptake, *, guidance=1.0, cond_untold=None):
    early = orig(models, uptake, guidance=guidance, cond_untold=cond_untold)
    late = orig(LATE, uptake, guidance=guidance, cond_untold=cond_untold)
    def velocity(x_in, t):
        return late(x_in, t) if float(t[0]) >= SWITCH else early(x_in, t)
    return velocity

g.guided_velocity = expert
from tumorgen.cli import main
sys.exit(main(sys.argv[1:]))

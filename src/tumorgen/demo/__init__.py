"""`tumorgen demo`: the whole pipeline on phantoms, on a CPU, in bounded time: what a newcomer runs first.

It calls the same functions as the individual commands, in order: phantoms in the AutoPET layout ->
prepare -> train the VAE -> train TumorGen -> synthesize tumors into the healthy phantoms (boxes in
the lungs found on CT) -> montage, first quality numbers and `report.md`. Each training stage gets a
wall-time budget (`train.max_minutes`), so the demo ends in the time asked whatever the machine.

Everything lands under one folder, and a second run reuses what is complete: phantoms and the PREP
cache when their folders exist (both are written atomically), a training stage when its checkpoint
reached its budget or its steps (otherwise it resumes with the time left), and the synthetic cases
when their manifest names the current checkpoint.

Modules: `plan` (what runs and where it lands), `stages` (one function per stage), `quality` (the
first numbers, through `evaluation.tumor_measures`), `montage`, `report`, and `run` (the stages in order).
"""

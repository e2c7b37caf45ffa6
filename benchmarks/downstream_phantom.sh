#!/usr/bin/env bash
# Issue 10's downstream study on phantoms, end to end on a CPU: 40 AutoPET-layout phantoms (seed 11,
# seeded 30/10 split), the VAE (1500 steps) and TumorGen (1600 steps, the demo's budget) with the
# `phantom` preset, DiffTumor on the same VAE and windows for the same 1600 steps, then the study:
# real / TumorGen / SynTumor / DiffTumor at n = 5, 10, 20 real cases, 3 seeds, 2000 segmenter steps of
# 32^3 patches per cell (phantom tumors fill under 0.1% of the 64^3 volume: a third of the patches are
# centered on a tumor, batch Dice, lr 3e-3; chosen on a validation split of the training phantoms), and
# the strict arm tumorgen-own for n = 5, seed 0 (a VAE and TumorGen trained on those 5 cases only, at
# half the steps). About 2 hours on 2 cores. Run from the repository root.
set -euo pipefail
RAW=${RAW:-data/phantom-downstream}
PREP=${PREP:-prep/phantom-downstream}
RUNS=${RUNS:-runs/phantom-downstream}
OUT=${OUT:-benchmarks/results/downstream_phantom}
BIN=${BIN:-.venv/bin}

$BIN/tumorgen phantom --layout autopet --out "$RAW" --cases 40 --size 64 --seed 11
$BIN/tumorgen prepare --layout autopet --root "$RAW" --out "$PREP" --test-fraction 0.25 --seed 0
$BIN/tumorgen train-vae --data "$PREP" --out "$RUNS/vae" --config phantom --steps 1500
$BIN/tumorgen train --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/tumorgen" --config phantom --steps 1600
$BIN/tumorgen train-baseline --method difftumor --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/difftumor" \
    --config phantom --steps 1600
$BIN/python benchmarks/downstream_generators.py --data "$PREP" --out "$RUNS/own" --n-real 5 --seeds 0 \
    --config phantom --vae-steps 750 --steps 800
$BIN/python benchmarks/downstream.py --data "$PREP" --out "$OUT" --tumorgen "$RUNS/tumorgen" \
    --tumorgen-own "$RUNS/own" --difftumor "$RUNS/difftumor" --arms real,tumorgen,tumorgen-own,syntumor,difftumor \
    --n-real 5,10,20 --seeds 0,1,2 --seg-steps 2000 --seg-lr 3e-3 --seg-roi 32 --seg-batch-dice \
    --seg-channels 8,16,32,64 --synthetic 1x

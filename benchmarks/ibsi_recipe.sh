#!/usr/bin/env bash
# The IBSI recipe end to end: prepare the 41 real FDG-PET sarcoma cases (seeded 31/10 split), train the
# VAE (2200 steps) and TumorGen (625 steps) with the `ibsi` preset (bounded by steps: the same model on
# any machine), then DiffTumor and BLD on the same VAE and box windows with TumorGen's step budget, and
# MedFusion (its own VAE with the VAE's budget, then its denoiser) and HA-GAN on the same windows and
# budget, then judge the test split once: each stage on its own, and the paired protocol at 1, 2, 4, 10
# and 50 Euler steps beside DiffTumor, BLD and MedFusion (DDIM-50), HA-GAN, SynTumor, a hot blob and the
# empty box. Every training
# resumes where it stopped (run the script again). Run from the repository root.
set -euo pipefail
DATA=${DATA:-../shared/data/ibsi-sts-pet}
PREP=${PREP:-prep/ibsi}
RUNS=${RUNS:-runs/ibsi}
OUT=${OUT:-benchmarks/results/ibsi_recipe}
BIN=${BIN:-.venv/bin}

[ -f "$PREP/dataset.json" ] || $BIN/tumorgen prepare --layout pairs --root "$DATA" --out "$PREP" --image-glob "*/PET_image.nii.gz" \
    --mask-glob "*/PET_mask.nii.gz" --suv-max 50 --test-fraction 0.25 --seed 0
resume() { [ -f "$1/checkpoints/last.pt" ] && echo --resume || true; }
resume_own_vae() { [ -f "$1/config.json" ] && echo --resume || true; }  # MedFusion: its VAE phase comes first
$BIN/tumorgen train-vae --data "$PREP" --out "$RUNS/vae" --config ibsi $(resume "$RUNS/vae")
$BIN/tumorgen train --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/tumorgen" --config ibsi $(resume "$RUNS/tumorgen")
# the shippable form (what src/tumorgen/bundled/ibsi-fdg holds, with its MODEL_CARD.md written by hand)
[ -d "$RUNS/ibsi-fdg" ] || $BIN/tumorgen export-model --model "$RUNS/tumorgen" --out "$RUNS/ibsi-fdg" --name ibsi-fdg --half
# the baselines' budget: TumorGen's steps (the last line of its metrics.jsonl)
BASELINE_STEPS=${BASELINE_STEPS:-$(tail -n 1 "$RUNS/tumorgen/metrics.jsonl" | $BIN/python -c "import json, sys; print(json.load(sys.stdin)['step'])")}
for METHOD in difftumor bld; do
  $BIN/tumorgen train-baseline --method $METHOD --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/$METHOD" --config ibsi \
      --steps "$BASELINE_STEPS" $(resume "$RUNS/$METHOD")
done
for METHOD in medfusion hagan; do
  $BIN/tumorgen train-baseline --method $METHOD --data "$PREP" --out "$RUNS/$METHOD" --config ibsi \
      --steps "$BASELINE_STEPS" $(resume_own_vae "$RUNS/$METHOD")
done
$BIN/python benchmarks/stage_diagnostics.py --data "$PREP" --model "$RUNS/tumorgen" --split test --out "$OUT/stages"
$BIN/python benchmarks/paired_protocol.py --data "$PREP" --out "$OUT/paired" --tumorgen "$RUNS/tumorgen" \
    --difftumor "$RUNS/difftumor" --bld "$RUNS/bld" --medfusion "$RUNS/medfusion" --hagan "$RUNS/hagan" \
    --steps 1,2,4,10,50 --overwrite

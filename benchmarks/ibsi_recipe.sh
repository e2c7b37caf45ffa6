#!/usr/bin/env bash
# The IBSI recipe end to end on a CPU: prepare the 41 real FDG-PET sarcoma cases (seeded 31/10 split),
# train the VAE (15 min) and TumorGen (45 min) with the `ibsi` preset, then DiffTumor and BLD on the same
# VAE and box windows with TumorGen's step budget (the steps of batch 8 its 45 minutes reached, 3809
# here; ~28 min each), then judge the test split once: each stage on its own, and the paired protocol at 1, 2,
# 4, 10 and 50 Euler steps beside DiffTumor and BLD (DDIM-50), SynTumor, a hot blob and the empty box.
# About 2 hours 15 minutes on 2 idle cores. Run from the repository root.
set -euo pipefail
DATA=${DATA:-../shared/data/ibsi-sts-pet}
PREP=${PREP:-prep/ibsi}
RUNS=${RUNS:-runs/ibsi}
OUT=${OUT:-benchmarks/results/ibsi_recipe}
BIN=${BIN:-.venv/bin}

$BIN/tumorgen prepare --layout pairs --root "$DATA" --out "$PREP" --image-glob "*/PET_image.nii.gz" \
    --mask-glob "*/PET_mask.nii.gz" --suv-max 50 --test-fraction 0.25 --seed 0
$BIN/tumorgen train-vae --data "$PREP" --out "$RUNS/vae" --config ibsi
$BIN/tumorgen train --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/tumorgen" --config ibsi
# the baselines' budget: the steps TumorGen reached (the last line of its metrics.jsonl; 3809 here)
BASELINE_STEPS=${BASELINE_STEPS:-$(tail -n 1 "$RUNS/tumorgen/metrics.jsonl" | $BIN/python -c "import json, sys; print(json.load(sys.stdin)['step'])")}
for METHOD in difftumor bld; do
  $BIN/tumorgen train-baseline --method $METHOD --data "$PREP" --vae "$RUNS/vae" --out "$RUNS/$METHOD" --config ibsi \
      --steps "$BASELINE_STEPS"
done
$BIN/python benchmarks/stage_diagnostics.py --data "$PREP" --model "$RUNS/tumorgen" --split test --out "$OUT/stages"
$BIN/python benchmarks/paired_protocol.py --data "$PREP" --out "$OUT/paired" --tumorgen "$RUNS/tumorgen" \
    --difftumor "$RUNS/difftumor" --bld "$RUNS/bld" --steps 1,2,4,10,50 --overwrite

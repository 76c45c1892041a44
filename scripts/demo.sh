#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in default, on the CPU, in a few minutes the first time
# and seconds after (each step is skipped when its output exists; delete demo_out/ to start over).
#   1. generate a synthetic street-scene dataset in the Cityscapes layout
#   2. train CASNet (config/synthetic_cpu.yaml) briefly
#   3. evaluate it with the official Cityscapes evaluators (and the post-processing alone: full oracle)
#   4. write predictions (panoptic PNG, overlay PNG, instances JSON) for the validation images
#   5. run the ROS 2 node on the validation images over DDS and save what it publishes (casnet_ros.demo)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
DATA=$OUT/data
RUN=$OUT/train
CASNET=.venv/bin/casnet
ITERS=${DEMO_ITERS:-300}

if [ ! -d "$DATA/gtFine/val" ]; then
  $CASNET synth --out "$DATA" --train 48 --val 8 --height 256 --width 512 --seed 0
fi
if [ ! -f "$RUN/model_final.pt" ]; then
  $CASNET train --config config/synthetic_cpu.yaml --data "$DATA" --out "$RUN" --device cpu --max-iters "$ITERS"
fi
if [ ! -f "$OUT/eval/metrics.json" ]; then
  $CASNET eval --data "$DATA" --split val --out "$OUT/eval" --checkpoint "$RUN/model_final.pt"
  $CASNET eval --data "$DATA" --split val --out "$OUT/eval_oracle_full" --oracle full
fi
$CASNET predict --checkpoint "$RUN/model_final.pt" --out "$OUT/predictions" "$DATA"/leftImg8bit/val/*/*_leftImg8bit.png
.venv/bin/python -m casnet_ros.demo --checkpoint "$RUN/model_final.pt" --out "$OUT/ros" \
  --images "$DATA"/leftImg8bit/val/*/*_leftImg8bit.png
echo "demo: predictions (panoptic PNG, overlay PNG, instances JSON) in $OUT/predictions, metrics in $OUT/eval/metrics.json"
echo "demo: ROS 2 node outputs (overlay PNG, instances JSON, summary.json with latencies) in $OUT/ros"

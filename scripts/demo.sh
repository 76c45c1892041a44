#!/usr/bin/env bash
# `make demo`: a generated drive replayed through the real ROS 2 node with the default model, on the CPU.
#   1. generate a short drive bag (casnet synth --bag): camera images, camera info, panoptic ground truth
#      (skipped when it exists; delete demo_out/ to start over)
#   2. play it over DDS to a casnet_node process (casnet replay --live): the node's outputs in an output
#      bag, metrics.json (frames, latency, PQ/AP/mIoU against the ground truth) and mosaic.png; the demo owns
#      $OUT/replay and replaces an earlier (or interrupted) replay there, so `make demo` runs any number of times
# DEMO_OUT, DEMO_FRAMES, DEMO_HEIGHT, DEMO_WIDTH and DEMO_PACE (--max-rate, or e.g. "--rate 1" for the recorded
# 10 Hz) override the defaults.
# VENV: the virtual environment to run (the Makefile passes its own, e.g. .venv-py3.10 for PYTHON=3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
FRAMES=${DEMO_FRAMES:-30}
HEIGHT=${DEMO_HEIGHT:-512}
WIDTH=${DEMO_WIDTH:-1024}
PACE=${DEMO_PACE:---max-rate}
CASNET=${VENV:-.venv}/bin/casnet
if [ ! -x "$CASNET" ]; then
  echo "demo: $CASNET not found: run \`make demo\` (it sets up the venv first)" >&2
  exit 1
fi

if [ ! -f "$OUT/drive/metadata.yaml" ]; then
  rm -rf "$OUT/drive"
  $CASNET synth --bag "$OUT/drive" --frames "$FRAMES" --height "$HEIGHT" --width "$WIDTH" --seed 7
fi
# shellcheck disable=SC2086  # PACE is one or two words on purpose
$CASNET replay --bag "$OUT/drive" --out "$OUT/replay" --overwrite --live $PACE
echo "demo: drive bag $OUT/drive; replay outputs in $OUT/replay:" \
  "output bag bag/, metrics.json, mosaic.png, casnet_node.log"

#!/usr/bin/env bash
# The model card's measured numbers and pictures, in one command (re-run it after shipping new weights):
#   benchmarks/model_card.sh [MODEL]        (default: the shipped lfq-base)
# 1. `lfqcodec bench` on the held-out clips (armwrestling, kitten, aquarium, vtest) and the two clips
#    that chose every model so far (bikes, carphone), first 33 frames each, against x265: bits per
#    pixel, PSNR, MS-SSIM, VMAF, BD-rate, into benchmarks/results/model-card/ as bench.json (numbers,
#    machine, date, command), bench.txt (the table), rd.png (RD curves) and frames/CLIP.png (one
#    frame with motion per clip: source / lfqcodec / x265 side by side);
# 2. benchmarks/model_card_table.py writes the results table into models/lfq-base.md and README.md
#    (between their "results table" markers) from that JSON.
# Clips: ../shared/data (LFQ_SHARED_DATA) and ~/.cache/lfqcodec/data (LFQ_DATA; vtest.avi comes from
# scripts/fetch_data.sh). Needs the bench extra (pip install -e '.[bench]').
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${LFQ_SHARED_DATA:-$here/../../shared/data}
data=${LFQ_DATA:-$HOME/.cache/lfqcodec/data}
model=${1:-}
out=$here/results/model-card
clips=("$shared/validation/armwrestling.mp4" "$shared/video/kitten.mp4" "$shared/video/aquarium.mp4"
       "$data/video/vtest.avi" "$shared/video/bikes.mp4" "$shared/video/carphone_pristine.mp4")
for clip in "${clips[@]}"; do
  [ -f "$clip" ] || { echo "model_card.sh: missing $clip (see ../shared/data/SOURCES.md, scripts/fetch_data.sh)" >&2; exit 1; }
done
mkdir -p "$out"
lfqcodec bench "${clips[@]}" --frames 33 --codecs x265 ${model:+--model "$model"} --json "$out/bench.json" \
  --plot "$out/rd.png" --frames-png "$out/frames" -q | tee "$out/bench.txt"
"${PYTHON:-python}" "$here/model_card_table.py" "$out/bench.json"

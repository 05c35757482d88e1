#!/usr/bin/env bash
# The model card's measured numbers and pictures, in one command (re-run it after shipping new weights):
#   benchmarks/model_card.sh [MODEL]        (default: the shipped lfq-base)
# 1. `lfqcodec bench` on each held-out clip (armwrestling, kitten, aquarium, city; vtest, seen by versions
#    1-5, as a fifth) and on the two
#    clips that chose every model so far (carphone, bikes), first 33 frames, against x265: bits per
#    pixel, PSNR, MS-SSIM, VMAF, BD-rate, into benchmarks/results/model-card/clips/CLIP.json (numbers,
#    machine, date, command) and frames/CLIP.png (one frame with motion: source / lfqcodec / x265
#    side by side). One clip at a time, so a long run shows progress and keeps what it finished:
#    with KEEP=1, clips whose JSON was made with the same weights are not run again.
# 2. benchmarks/model_stats.py: parameters and FLOPs per pixel, into model_stats.json;
# 3. benchmarks/model_card_table.py merges the clips into bench.json, bench.txt and rd.png (RD curves)
#    and writes the tables into models/lfq-base.md and docs/RESULTS.md (between their "results table" markers).
# Clips: ../shared/data (LFQ_SHARED_DATA) and ~/.cache/lfqcodec/data (LFQ_DATA; vtest.avi comes from
# scripts/fetch_data.sh, city.mpg too, into heldout/). Needs the bench extra (pip install -e '.[bench]').
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${LFQ_SHARED_DATA:-$here/../../shared/data}
data=${LFQ_DATA:-$HOME/.cache/lfqcodec/data}
model=${1:-}
python=${PYTHON:-python}
out=$here/results/model-card
# the four held-out clips (lfqcodec/training/heldout.py), then the selection clips and vtest
measuring=$(LFQ_SHARED_DATA=$shared LFQ_DATA=$data "$python" -c \
  'from lfqcodec.training.heldout import measuring_clips; print(*measuring_clips(), sep="\n")')  # fails the script if it fails
mapfile -t clips <<< "$measuring"
clips+=("$shared/video/carphone_pristine.mp4" "$shared/video/bikes.mp4" "$data/video/vtest.avi")
for clip in "${clips[@]}"; do
  [ -f "$clip" ] || { echo "model_card.sh: missing $clip (see ../shared/data/SOURCES.md, scripts/fetch_data.sh)" >&2; exit 1; }
done
mkdir -p "$out/clips" "$out/frames"
"$python" "$here/model_stats.py" ${model:+--model "$model"} > "$out/model_stats.json"
sha=$("$python" -c 'import sys; from lfqcodec.model.checkpoint import load_model; print(load_model(sys.argv[1] or None).sha256)' "$model")
for clip in "${clips[@]}"; do
  name=$(basename "${clip%.*}")
  if [ "${KEEP:-0}" = 1 ] && grep -q "\"sha256\": \"$sha\"" "$out/clips/$name.json" 2>/dev/null; then
    echo "model_card.sh: $name done with these weights, kept"; continue
  fi
  echo "model_card.sh: $name ($(date -u +%H:%M:%S) UTC)"
  lfqcodec bench "$clip" --frames 33 --codecs x265 ${model:+--model "$model"} --json "$out/clips/$name.json" \
    --frames-png "$out/frames" -q > "$out/clips/$name.txt"
done
"$python" "$here/model_card_table.py" "$out"/clips/*.json --out "$out"
